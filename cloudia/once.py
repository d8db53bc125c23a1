"""Values a process builds once per set of arguments: clients, settings, the chat service.

`functools.lru_cache` alone lets threads that miss at the same moment each build the value: twenty
connections opened at once in one process (the local gateway runs every handler in a thread pool)
would build twenty sets of boto3 clients, seconds of CPU under the GIL. `built_once` takes a lock
around the cache, so the first caller builds and the others wait for its value.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Generic, TypeVar

R = TypeVar("R")


class BuiltOnce(Generic[R]):
    def __init__(self, build: Callable[..., R], maxsize: int | None):
        self._cached = functools.lru_cache(maxsize=maxsize)(build)
        # Re-entrant: a value may be built from others of the same function.
        self._lock = threading.RLock()
        functools.update_wrapper(self, build)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        with self._lock:
            return self._cached(*args, **kwargs)

    def cache_clear(self) -> None:
        with self._lock:
            self._cached.cache_clear()

    def cache_info(self):
        return self._cached.cache_info()


def built_once(maxsize: int | None = None) -> Callable[[Callable[..., R]], BuiltOnce[R]]:
    """`functools.lru_cache(maxsize)`, safe for threads that miss at the same time."""
    def decorate(build: Callable[..., R]) -> BuiltOnce[R]:
        return BuiltOnce(build, maxsize)
    return decorate
