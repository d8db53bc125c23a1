"""The fake LLM server's control API and raw wire format (what the SDK tests do not see)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest


def http(method: str, url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_faults_are_set_read_and_reset(fake_llm):
    status, body = http("POST", f"{fake_llm.url}/_faults", {"latency_ms": 20, "error_rate": 0.5})
    assert status == 200
    current = json.loads(http("GET", f"{fake_llm.url}/_faults")[1])
    assert current == {"latency_ms": 20, "error_rate": 0.5, "error_status": 503, "retry_after_s": 1.0,
                       "throttle_rate": 0.0, "timeout_rate": 0.0, "down": False}
    http("DELETE", f"{fake_llm.url}/_faults")
    assert json.loads(http("GET", f"{fake_llm.url}/_faults")[1])["error_rate"] == 0.0


@pytest.mark.parametrize("body", [{"latency": 5}, {"down": "yes"}, ["not", "an", "object"]])
def test_bad_fault_settings_are_refused(fake_llm, body):
    status, _ = http("POST", f"{fake_llm.url}/_faults", body)
    assert status == 400
    assert json.loads(http("GET", f"{fake_llm.url}/_faults")[1])["latency_ms"] == 0


def test_openai_stream_is_sse_ending_in_done_and_stats_count_requests(fake_llm):
    status, raw = http("POST", f"{fake_llm.url}/v1/chat/completions",
                       {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi you"}]})
    assert status == 200
    events = [line[len("data: "):] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]
                   if json.loads(e)["choices"])
    assert text == "Echo: hi you"
    assert json.loads(http("GET", f"{fake_llm.url}/_stats")[1])["chat_completions"] == 1
    http("DELETE", f"{fake_llm.url}/_stats")
    assert json.loads(http("GET", f"{fake_llm.url}/_stats")[1])["requests"] == 0
