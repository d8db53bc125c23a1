"""The Redis Lua scripts, one file each, named after the module that runs it (`breaker_acquire.lua`
is `cloudia.breaker`'s); each file says what its KEYS and ARGV are."""
from __future__ import annotations

from pathlib import Path

_DIR = Path(__file__).parent


def source(name: str) -> str:
    """The text of `<name>.lua`, for `redis.Redis.register_script`."""
    return (_DIR / f"{name}.lua").read_text()
