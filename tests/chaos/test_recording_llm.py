"""The fake LLM's ledger, which the chaos suite's "charged twice" rests on."""
from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from chaos.recording_llm import POISON_MARKER, RecordingFakeLlm


def ask(llm: RecordingFakeLlm, *requests: dict) -> tuple[list[int], dict]:
    async def run():
        async with TestClient(TestServer(llm.app())) as client:
            statuses = []
            for body in requests:
                response = await client.post("/v1/chat/completions", json=body)
                await response.read()
                statuses.append(response.status)
            served = await (await client.get("/_served")).json()
            return statuses, served

    return asyncio.run(run())


def chat(text: str, stream: bool = False) -> dict:
    return {"model": "fake", "stream": stream, "messages": [{"role": "user", "content": text}]}


def test_whole_completions_are_counted_per_last_user_message_streamed_or_not():
    """GIVEN the recording fake LLM
    WHEN one prompt is answered twice (once streamed) and another once
    THEN the ledger counts 2 and 1 completions, each with its time."""
    statuses, served = ask(RecordingFakeLlm(), chat("job one"), chat("job one", stream=True), chat("job two"))

    assert statuses == [200, 200, 200]
    assert served["completions"] == {"job one": 2, "job two": 1}
    assert len(served["completed_at"]["job one"]) == 2


def test_injected_faults_and_poison_are_attempts_but_not_completions():
    """GIVEN every request failing with 503, and a poison prompt
    WHEN both are asked
    THEN both are recorded as attempts and neither as a completion (nothing was charged)."""
    llm = RecordingFakeLlm()
    llm.faults.error_rate = 1.0
    statuses, served = ask(llm, chat("failing"), chat(f"{POISON_MARKER} bad"))

    assert statuses == [503, 503]
    assert served["completions"] == {}
    assert set(served["attempts"]) == {"failing", f"{POISON_MARKER} bad"}
