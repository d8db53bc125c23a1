"""Values a process builds once: threads that miss at the same moment share one build."""
import threading
import time

from cloudia.once import built_once


def test_threads_that_miss_together_build_the_value_once_and_all_get_it():
    builds = []

    @built_once(maxsize=None)
    def client(name: str) -> object:
        builds.append(name)
        time.sleep(0.05)  # long enough for every thread to arrive while the first builds
        return object()

    start = threading.Barrier(10)
    got = []

    def ask():
        start.wait()
        got.append(client("dynamodb"))

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert builds == ["dynamodb"]
    assert len(got) == 10 and all(value is got[0] for value in got)
    assert client("sqs") is not got[0] and builds == ["dynamodb", "sqs"]


def test_cache_clear_makes_the_next_call_build_again():
    @built_once(maxsize=1)
    def settings() -> object:
        return object()

    first = settings()
    assert settings() is first
    settings.cache_clear()
    assert settings() is not first
