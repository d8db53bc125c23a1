"""The chat page in a real browser (Debian's Chromium, driven by Playwright) against the real local
runtime: chat, survive a gateway restart without losing an answer, and show the circuit breaker."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import boto3
import pytest
import redis as redis_lib

from cloudia.jobs import ANSWERED, JobStore
from cloudia.protocol import CIRCUIT_OPEN_MESSAGE
from cloudia.settings import Resilience

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"
TIMEOUT_MS = 30_000


@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make deps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 980, "height": 560})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        # Shown when a test fails: what each page showed at the end.
        for shown in context.pages:
            turns = shown.eval_on_selector_all(
                ".turn", "ts => ts.map(t => [t.dataset.state, t.dataset.jobId, t.innerText])")
            print("page", shown.url, shown.get_attribute("#status", "data-status"), turns)
        context.close()
        browser.close()


def send(page, text: str):
    page.fill("#message", text)
    page.press("#message", "Enter")
    return page.locator(".turn").filter(has_text=text).last


def wait_until(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout_s} s")


def test_chat_then_an_answer_completed_while_the_gateway_was_away_is_shown_after_reconnect(local_stack, page,
                                                                                           settings):
    # GIVEN the page, connected (reconnect delays capped at 2 s to keep the test short)
    page.goto(local_stack.page + "?backoff_cap_ms=2000")
    page.wait_for_selector("#status[data-status=online]")
    # WHEN the person sends a message THEN the page shows it answered
    first = send(page, "hello from the browser")
    page.wait_for_selector(".turn[data-state=answered]")
    assert "hello from the browser" in first.locator(".bubble.assistant").inner_text()

    # GIVEN a slow LLM, so the next answer is still being written when the gateway goes away
    local_stack.faults(latency_ms=3000)
    second = send(page, "answer me while I am away")
    page.wait_for_selector(".turn[data-job-id][data-state=queued]")
    job_id = second.get_attribute("data-job-id")
    assert job_id
    # WHEN the gateway stops
    local_stack.stop_gateway()
    page.wait_for_selector("#status[data-status=reconnecting]")
    # AND the job is answered meanwhile (nobody to push it to)
    jobs = JobStore(boto3.client("dynamodb"), settings.jobs_table, Resilience())
    started = time.monotonic()
    wait_until(lambda: (jobs.get(job_id) or {}).get("status") == ANSWERED, 30, "the job answered")
    assert second.get_attribute("data-state") != "answered"
    print(f"answered {time.monotonic() - started:.1f} s after the gateway stopped")
    # AND the gateway comes back
    local_stack.start_gateway()
    back = time.monotonic()
    # THEN the page reconnects by itself and shows the answer it missed
    page.wait_for_selector("#status[data-status=online]")
    page.wait_for_selector(f'.turn[data-job-id="{job_id}"][data-state=answered]')
    print(f"shown {time.monotonic() - back:.1f} s after the gateway came back")
    assert "answer me while I am away" in second.locator(".bubble.assistant").inner_text()
    assert page.locator(".turn").count() == 2  # nothing shown twice
    # WHEN the page is reloaded THEN the conversation (kept in localStorage) comes back from the history
    page.reload()
    page.wait_for_selector(".turn[data-state=answered] >> nth=1")
    assert page.locator(".turn").count() == 2
    assert "answer me while I am away" in page.locator(".turn").nth(1).inner_text()


def test_an_answer_pushed_while_redis_had_lost_the_session_is_shown_after_the_next_pong(local_stack, page,
                                                                                       settings):
    # GIVEN the page, connected, with its timers under the test's control (so no ping comes unasked)
    page.clock.install()
    page.goto(local_stack.page + "?ping_ms=5000")
    page.wait_for_selector("#status[data-status=online]")
    page.clock.pause_at(time.time() + 1)
    # AND a message queued while the worker is away
    local_stack.stop_worker()
    turn = send(page, "answer me while my session is gone")
    page.wait_for_selector(".turn[data-job-id][data-state=queued]")
    job_id = turn.get_attribute("data-job-id")
    # WHEN Redis loses the connection registrations (as in a restart) and the answer is pushed to no one
    client = redis_lib.Redis.from_url(settings.redis_url)
    client.delete(*(client.keys("conn:*") + client.keys("user:*:conns")))
    local_stack.start_worker()
    jobs = JobStore(boto3.client("dynamodb"), settings.jobs_table, Resilience())
    wait_until(lambda: (jobs.get(job_id) or {}).get("status") == ANSWERED, 30, "the job answered")
    time.sleep(0.5)
    assert turn.get_attribute("data-state") == "queued"
    # THEN the next ping's pong says the session was made again, and the page reads the answer from the history
    page.clock.run_for(5000)
    page.wait_for_selector(f'.turn[data-job-id="{job_id}"][data-state=answered]', timeout=10_000)
    assert "answer me while my session is gone" in turn.locator(".bubble.assistant").inner_text()
    assert page.get_attribute("#status", "data-connections") == "1"  # no reconnect was needed


def test_llm_down_shows_the_circuit_breaker_error_and_the_kept_job_is_answered_when_it_is_back(local_stack,
                                                                                               page, tmp_path):
    page.goto(local_stack.page)
    page.wait_for_selector("#status[data-status=online]")
    first = send(page, "What is a circuit breaker?")
    page.wait_for_selector(".turn[data-state=answered]")
    # GIVEN the LLM goes down
    local_stack.faults(down=True)
    # WHEN the person sends a message
    held = send(page, "Are you still there?")
    # THEN the page shows the circuit breaker's error on that message
    page.wait_for_selector(".turn[data-state=held]", timeout=45_000)
    assert CIRCUIT_OPEN_MESSAGE in held.locator(".detail").inner_text()
    assert first.get_attribute("data-state") == "answered"
    # AND a message sent while the circuit is open is held at once too
    also_held = send(page, "And now?")
    page.wait_for_selector(".turn[data-state=held] >> nth=1", timeout=45_000)
    assert CIRCUIT_OPEN_MESSAGE in also_held.locator(".detail").inner_text()
    # The README's screenshot: written when missing or asked for (UPDATE_SCREENSHOT=1), so a test run
    # does not change the work tree.
    refresh = os.environ.get("UPDATE_SCREENSHOT") == "1" or not SCREENSHOT.exists()
    shot = SCREENSHOT if refresh else tmp_path / "screenshot.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    # WHEN the LLM is back THEN the kept job is answered on the page
    local_stack.faults()
    page.wait_for_selector(".turn[data-state=answered] >> nth=2", timeout=60_000)
    assert held.get_attribute("data-state") == "answered"
    assert "Are you still there?" in held.locator(".bubble.assistant").inner_text()
    assert "And now?" in also_held.locator(".bubble.assistant").inner_text()


@pytest.mark.gateway_args("--idle-timeout-s", "2")
def test_the_pages_heartbeat_keeps_an_idle_connection_open(local_stack, page):
    # GIVEN a gateway that closes a connection idle for 2 s, and a second page that pings too rarely
    page.goto(local_stack.page + "?ping_ms=500")
    rare = page.context.new_page()
    rare.goto(local_stack.page + "?ping_ms=600000&backoff_ms=100&backoff_cap_ms=200")
    for p in (page, rare):
        p.wait_for_selector("#status[data-status=online]")
    # WHEN both stay idle well past the timeout
    time.sleep(5)
    # THEN the heartbeat kept the first on its one connection, while the second was dropped and reconnected
    assert page.get_attribute("#status", "data-connections") == "1"
    assert page.get_attribute("#status", "data-status") == "online"
    assert int(rare.get_attribute("#status", "data-connections")) >= 2


def test_a_refused_message_shows_failed_with_the_reason(local_stack, page):
    # GIVEN a deployment that accepts messages up to 200 characters
    page.goto(local_stack.page)
    page.wait_for_selector("#status[data-status=online]")
    # WHEN the person sends a longer one
    refused = send(page, "x" * 300)
    # THEN that message shows failed, with the backend's reason
    page.wait_for_selector(".turn[data-state=failed]")
    assert "200 characters" in refused.locator(".detail").inner_text()
    # AND the next message goes through
    send(page, "short one")
    page.wait_for_selector(".turn[data-state=answered]")
    assert refused.get_attribute("data-state") == "failed"


def test_a_call_made_again_restarts_the_answer_on_the_page_instead_of_appending_to_it(local_stack, page, settings):
    # GIVEN the page, connected, and a message queued while the worker is away
    page.goto(local_stack.page)
    page.wait_for_selector("#status[data-status=online]")
    local_stack.stop_worker()
    turn = send(page, "tell me a story")
    page.wait_for_selector(".turn[data-job-id][data-state=queued]")
    job_id = turn.get_attribute("data-job-id")
    [connection_key] = redis_lib.Redis.from_url(settings.redis_url, decode_responses=True).keys("conn:*")
    connection = connection_key.removeprefix("conn:")
    management = boto3.client("apigatewaymanagementapi", endpoint_url=f"http://localhost:{local_stack.ports.gateway}")

    def push(**frame) -> None:
        management.post_to_connection(ConnectionId=connection, Data=json.dumps({"jobId": job_id, **frame}).encode())

    # WHEN the first attempt's tokens stream, the call is cut, and the second attempt's tokens follow
    # (with a late token of the first attempt among them)
    push(event="token", token="Once upon", attempt=1)
    push(event="token", token=" a time, a dragon", attempt=1)
    page.wait_for_function("t => document.querySelector(`.turn[data-job-id='${t}'] .bubble.assistant`)"
                           "?.innerText.includes('dragon')", arg=job_id)
    push(event="token", token="In a land", attempt=2)
    push(event="token", token=" far away", attempt=2)
    push(event="token", token=" STALE", attempt=1)
    # THEN the page shows only the second attempt's text
    assistant = turn.locator(".bubble.assistant")
    page.wait_for_function("t => document.querySelector(`.turn[data-job-id='${t}'] .bubble.assistant`)"
                           "?.innerText.includes('far away')", arg=job_id)
    assert assistant.inner_text().strip() == "In a land far away"
    # AND the answer replaces it with the whole text
    push(event="answer", message="In a land far away, the end.")
    page.wait_for_selector(f'.turn[data-job-id="{job_id}"][data-state=answered]')
    assert assistant.inner_text().strip() == "In a land far away, the end."
