"""The consumer's long poll runs in a daemon thread (a shutdown must not wait for it); what it raises
must reach the awaiting loop, which logs it, backs off and polls again."""
from __future__ import annotations

import asyncio

import pytest

from worker.consumer import _in_daemon_thread


def test_an_error_in_the_polling_thread_reaches_the_awaiting_coroutine_instead_of_hanging_it():
    def unreachable_sqs():
        raise ConnectionError("SQS unreachable")

    async def poll():
        return await asyncio.wait_for(_in_daemon_thread(unreachable_sqs), timeout=5)

    with pytest.raises(ConnectionError, match="SQS unreachable"):
        asyncio.run(poll())


def test_a_result_of_the_polling_thread_reaches_the_awaiting_coroutine():
    async def poll():
        return await asyncio.wait_for(_in_daemon_thread(lambda: {"Messages": []}), timeout=5)

    assert asyncio.run(poll()) == {"Messages": []}
