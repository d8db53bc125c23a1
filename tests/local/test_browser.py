"""The chat page in a real browser (Debian's Chromium, driven by Playwright) against the real local
runtime and the emulator's Cognito user pool: sign in (and the invited user's new password), chat,
survive a gateway restart and a token refresh without losing an answer, sign out, and show the circuit
breaker."""
from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import redis as redis_lib

from cloudia.jobs import ANSWERED, JobStore
from cloudia.protocol import CIRCUIT_OPEN_MESSAGE
from cloudia.settings import Resilience
from local_runtime.fake_llm import compose_answer
from local_runtime.identity import cognito, dev_password

pytestmark = pytest.mark.timeout(180)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 # A document the test serves itself (`route.fulfill`, to give it the hosted page's CSP)
                 # has no address to Chromium's Local Network Access checks, which would then block its
                 # connections to the loopback gateway and emulator; a page the gateway serves is not affected.
                 "--disable-features=LocalNetworkAccessChecks"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"
TIMEOUT_MS = 30_000
SESSION_KEY = "cloudia.session"  # the page's sessionStorage key for its tokens


@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make deps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 980, "height": 560})
        console = []
        context.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        # Shown when a test fails: what each page showed at the end.
        for shown in context.pages:
            turns = shown.eval_on_selector_all(
                ".turn", "ts => ts.map(t => [t.dataset.state, t.dataset.jobId, t.innerText])")
            print("page", shown.url, shown.get_attribute("body", "data-view"),
                  shown.get_attribute("#status", "data-status"), shown.inner_text("#auth-message"), turns)
        print("console", *console[-20:], sep="\n  ")
        context.close()
        browser.close()


def new_user(resources, prefix: str = "ann") -> str:
    """A user of the emulator's pool with the password `dev_password(user)` (the pool outlives a test:
    each test has users of its own)."""
    user = f"{prefix}-{uuid.uuid4().hex[:8]}"
    resources.user_pool.ensure_user(user)
    return user


def sign_in(page, user: str, password: str | None = None, online: bool = True) -> None:
    """What a person does on the sign-in form."""
    page.wait_for_selector("body[data-view=signin]")
    page.fill("#username", user)
    page.fill("#password", password or dev_password(user))
    page.click("#signin-submit")
    if online:
        page.wait_for_selector("#status[data-status=online]")


def open_signed_in(page, url: str, user: str) -> None:
    page.goto(url)
    sign_in(page, user)


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


def gateway_connections(local_stack) -> int:
    with urllib.request.urlopen(local_stack.page + "healthz", timeout=5) as response:
        return json.load(response)["connections"]


def page_config(local_stack) -> dict:
    with urllib.request.urlopen(local_stack.page + "config.json", timeout=5) as response:
        return json.load(response)

def serve_under_the_aws_csp(page, local_stack) -> list[str]:
    """Serve the page with the CSP CloudFront gives it on AWS; the console's CSP violations, as they come."""
    from stacks.components.hosted_page import content_security_policy

    config = page_config(local_stack)
    csp = content_security_policy(config["websocketUrl"], config["cognitoEndpoint"])

    def with_csp(route):
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "content-security-policy": csp})

    page.route(lambda url: urlparse(url).path == "/", with_csp)
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    return refused



def claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def socket_token(socket) -> str:
    """The token a page's WebSocket was opened with (`?token=`)."""
    return parse_qs(urlparse(socket.url).query)["token"][0]


def user_sub(resources, user: str) -> str:
    attributes = cognito(resources.user_pool.endpoint).admin_get_user(
        UserPoolId=resources.user_pool.pool_id, Username=user)["UserAttributes"]
    return next(a["Value"] for a in attributes if a["Name"] == "sub")


def stored(page) -> dict:
    return page.evaluate("() => ({local: Object.entries(localStorage), session: Object.entries(sessionStorage)})")


def test_chat_then_an_answer_completed_while_the_gateway_was_away_is_shown_after_reconnect(local_stack, page,
                                                                                           settings, resources):
    # GIVEN the page, signed in and connected (reconnect delays capped at 2 s to keep the test short)
    open_signed_in(page, local_stack.page + "?backoff_cap_ms=2000", new_user(resources))
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
    # WHEN the page is reloaded THEN it is still signed in (the tab's session) and the conversation (the
    # user's, kept in localStorage under the token's sub) comes back from the history
    page.reload()
    page.wait_for_selector("#status[data-status=online]")
    assert page.get_attribute("body", "data-view") == "chat"
    page.wait_for_selector(".turn[data-state=answered] >> nth=1")
    assert page.locator(".turn").count() == 2
    assert "answer me while I am away" in page.locator(".turn").nth(1).inner_text()


def test_an_answer_pushed_while_redis_had_lost_the_session_is_shown_after_the_next_pong(local_stack, page,
                                                                                       settings, resources):
    # GIVEN the page, signed in and connected, with its timers under the test's control (so no ping comes unasked)
    page.clock.install()
    open_signed_in(page, local_stack.page + "?ping_ms=5000", new_user(resources))
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
                                                                                               page, tmp_path,
                                                                                               resources):
    open_signed_in(page, local_stack.page, new_user(resources, "ada"))
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
def test_the_pages_heartbeat_keeps_an_idle_connection_open(local_stack, page, resources):
    # GIVEN a gateway that closes a connection idle for 2 s, and a second page that pings too rarely
    # (each tab signs in: the tokens are the tab's own)
    user = new_user(resources)
    open_signed_in(page, local_stack.page + "?ping_ms=500", user)
    rare = page.context.new_page()
    open_signed_in(rare, local_stack.page + "?ping_ms=600000&backoff_ms=100&backoff_cap_ms=200", user)
    # WHEN both stay idle well past the timeout
    time.sleep(5)
    # THEN the heartbeat kept the first on its one connection, while the second was dropped and reconnected
    assert page.get_attribute("#status", "data-connections") == "1"
    assert page.get_attribute("#status", "data-status") == "online"
    assert int(rare.get_attribute("#status", "data-connections")) >= 2


def test_a_refused_message_shows_failed_with_the_reason(local_stack, page, resources):
    # GIVEN a deployment that accepts messages up to 200 characters
    open_signed_in(page, local_stack.page, new_user(resources))
    # WHEN the person sends a longer one
    refused = send(page, "x" * 300)
    # THEN that message shows failed, with the backend's reason
    page.wait_for_selector(".turn[data-state=failed]")
    assert "200 characters" in refused.locator(".detail").inner_text()
    # AND the next message goes through
    send(page, "short one")
    page.wait_for_selector(".turn[data-state=answered]")
    assert refused.get_attribute("data-state") == "failed"


def test_a_failed_message_is_retried_from_the_page_and_answered(local_stack, page, settings, resources):
    # GIVEN the page under the hosted page's CSP (the Retry button is no inline code), signed in, and an
    # LLM that refuses every request (a 400: a permanent failure, the job is not tried again)
    refused = serve_under_the_aws_csp(page, local_stack)
    open_signed_in(page, local_stack.page, new_user(resources))
    local_stack.faults(error_rate=1.0, error_status=400)
    # WHEN the person sends a message THEN it fails for good, and the page offers to retry it
    turn = send(page, "please answer me after all")
    page.wait_for_selector(".turn[data-state=failed]", timeout=45_000)
    job_id = turn.get_attribute("data-job-id")
    assert job_id
    retry = turn.locator("button.retry")
    assert retry.is_visible() and retry.inner_text() == "Retry"
    jobs = JobStore(boto3.client("dynamodb"), settings.jobs_table, Resilience())
    wait_until(lambda: (jobs.get(job_id) or {}).get("status") == "failed", 10, "the job failed")
    # WHEN the LLM is well again and the person presses Retry
    local_stack.faults()
    page.evaluate("""jobId => {
        window.states = [];
        const turn = document.querySelector(`.turn[data-job-id='${jobId}']`);
        new MutationObserver(() => window.states.push(turn.dataset.state))
            .observe(turn, {attributes: true, attributeFilter: ["data-state"]});
    }""", job_id)
    retry.click()
    # THEN the page shows the new state, and then the answer, on the same message, without retyping it
    page.wait_for_selector(f'.turn[data-job-id="{job_id}"][data-state=answered]', timeout=45_000)
    states = page.evaluate("() => window.states")
    assert states[0] == "sending" and "queued" in states and states[-1] == "answered", states
    assert "please answer me after all" in turn.locator(".bubble.assistant").inner_text()
    assert retry.is_hidden()
    assert page.locator(".turn").count() == 1
    # AND it was the same job, queued again once
    assert jobs.get(job_id)["status"] == ANSWERED and jobs.get(job_id)["retries"] == "1"
    assert not refused, refused


def test_a_call_made_again_restarts_the_answer_on_the_page_instead_of_appending_to_it(local_stack, page, settings,
                                                                                      resources):
    # GIVEN the page, signed in and connected, and a message queued while the worker is away
    open_signed_in(page, local_stack.page, new_user(resources))
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


# ---------- signing in ----------

def test_sign_in_then_chat_under_the_hosted_pages_content_security_policy(local_stack, page, resources):
    # GIVEN the page served with the CSP CloudFront gives it on AWS (no inline code, connections only to
    # its own origin, the WebSocket URL and Cognito)
    refused = serve_under_the_aws_csp(page, local_stack)
    config = page_config(local_stack)
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    user = new_user(resources)
    page.goto(local_stack.page)
    page.wait_for_selector("body[data-view=signin]")
    assert not sockets  # nothing connects before signing in
    # WHEN the person signs in with their user name and password
    sign_in(page, user)
    # THEN the header shows who is signed in, and the one connection carries the user's access token
    assert page.inner_text("#account-name") == user
    assert page.is_visible("#sign-out")
    assert user in page.inner_text("#status")
    [socket] = sockets
    token = socket_token(socket)
    assert claims(token)["token_use"] == "access"
    assert claims(token)["sub"] == user_sub(resources, user)
    assert socket.url.startswith(config["websocketUrl"] + "?")
    # AND the tokens are in the tab's sessionStorage, never in localStorage
    kept = stored(page)
    assert token in dict(kept["session"])[SESSION_KEY]
    assert not any(token in value or "eyJ" in value for _key, value in kept["local"])
    # WHEN the person sends a message THEN it is answered
    turn = send(page, "hello after signing in")
    page.wait_for_selector(".turn[data-state=answered]")
    assert "hello after signing in" in turn.locator(".bubble.assistant").inner_text()
    # AND the page broke no rule of the CSP, which is really in force (a connection elsewhere is refused)
    assert not refused, refused
    page.evaluate(f"() => fetch('http://localhost:{local_stack.ports.llm}/_stats').catch(() => null)")
    wait_until(lambda: refused, 5, "the CSP refusing a connection elsewhere")


def test_an_invited_user_chooses_a_new_password_then_chats(local_stack, page, resources):
    # GIVEN a user invited by an operator, with a temporary password
    pool = resources.user_pool
    user = f"invited-{uuid.uuid4().hex[:8]}"
    temporary = "Temporary-Pass-1!"
    cognito(pool.endpoint).admin_create_user(UserPoolId=pool.pool_id, Username=user, TemporaryPassword=temporary,
                                             MessageAction="SUPPRESS")
    page.goto(local_stack.page)
    # WHEN they sign in with it THEN the page asks for a new password
    sign_in(page, user, temporary, online=False)
    page.wait_for_selector("body[data-view=new-password]")
    assert page.is_visible("#new-password-form")
    assert not page.is_visible("#composer")
    # AND says so when the two entries differ, or when Cognito refuses the password
    page.fill("#new-password", "Chosen-Password-2?")
    page.fill("#new-password-again", "Chosen-Password-3?")
    page.click("#new-password-submit")
    page.wait_for_selector("#auth-message:not([hidden])")
    assert "not the same" in page.inner_text("#auth-message")
    page.fill("#new-password", "weak")
    page.fill("#new-password-again", "weak")
    page.click("#new-password-submit")
    page.wait_for_function("() => document.querySelector('#auth-message').innerText.includes('not accepted')")
    assert "password policy" in page.inner_text("#auth-message")  # Cognito's own message too
    assert page.get_attribute("body", "data-view") == "new-password"
    # WHEN they choose one that fits the policy THEN they are signed in and chat
    chosen = "Chosen-Password-2?"
    page.fill("#new-password", chosen)
    page.fill("#new-password-again", chosen)
    page.click("#new-password-submit")
    page.wait_for_selector("#status[data-status=online]")
    assert page.inner_text("#account-name") == user
    turn = send(page, "my first message")
    page.wait_for_selector(".turn[data-state=answered]")
    assert "my first message" in turn.locator(".bubble.assistant").inner_text()
    # AND the new password is the user's from now on
    assert pool.sign_in(user, chosen)["AccessToken"]


def test_a_wrong_password_shows_cognitos_message(local_stack, page, resources):
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    user = new_user(resources)
    page.goto(local_stack.page)
    sign_in(page, user, "Not-The-Password-1!", online=False)
    page.wait_for_selector("#auth-message:not([hidden])")
    assert "Incorrect username or password." in page.inner_text("#auth-message")
    assert page.get_attribute("body", "data-view") == "signin"
    assert page.input_value("#password") == ""  # cleared, to type again
    assert not sockets
    # AND the right password then goes through
    sign_in(page, user)
    assert page.is_hidden("#auth-message")


def test_a_token_refresh_during_an_answer_reconnects_without_losing_it(local_stack, page, resources):
    # GIVEN answers that stream for about nine seconds (900 tokens at 100 a second)
    request = urllib.request.Request(f"http://localhost:{local_stack.ports.llm}/_profile", method="POST",
                                     data=json.dumps({"name": "brisk", "tokens_per_s": 100}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()
    message = "tell me a long story [answer_tokens=900]"
    expected = compose_answer([{"role": "user", "content": message}], 900, None).text
    # AND a page that refreshes its one-hour tokens 6 s after they are issued
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    user = new_user(resources)
    open_signed_in(page, local_stack.page + "?refresh_before_exp_s=3594", user)
    signed_in = time.monotonic()
    # (what the page shows, watched: the streamed text must only ever grow toward the whole answer, and
    # the state of the answer when the page's connection changes)
    page.evaluate("""expected => {
        window.seen = {notPrefix: [], atConnection: []};
        const status = document.getElementById("status");
        new MutationObserver(() => {
            const turn = document.querySelector(".turn");
            window.seen.atConnection.push([status.dataset.connections, turn && turn.dataset.state]);
        }).observe(status, {attributes: true, attributeFilter: ["data-connections"]});
        new MutationObserver(() => {
            const text = document.querySelector(".turn .bubble.assistant .text");
            if (text && !expected.startsWith(text.textContent)) window.seen.notPrefix.push(text.textContent);
        }).observe(document.getElementById("log"), {subtree: true, childList: true, characterData: true});
    }""", expected)
    # WHEN the person asks for the long answer, and the refresh comes while it streams
    turn = send(page, message)
    page.wait_for_selector(".turn[data-state=streaming]")
    page.wait_for_selector(".turn[data-state=answered]", timeout=40_000)
    print(f"answered {time.monotonic() - signed_in:.1f} s after signing in")
    # THEN the page reconnected with a fresh token while the answer was streaming
    seen = page.evaluate("() => window.seen")
    assert ["2", "streaming"] in seen["atConnection"], seen["atConnection"]
    first, second = sockets[0], sockets[1]
    assert socket_token(first) != socket_token(second)
    assert claims(socket_token(first))["sub"] == claims(socket_token(second))["sub"] == user_sub(resources, user)
    assert claims(socket_token(second))["iat"] > claims(socket_token(first))["iat"] - 1
    # AND the answer is shown whole, once: the streamed text never lost or repeated a piece
    assert turn.locator(".bubble.assistant").inner_text() == expected
    assert not seen["notPrefix"], seen["notPrefix"][:1]
    assert page.locator(".turn").count() == 1
    # AND the connection with the old token was closed once drained (the refreshes go on: one at a time)
    wait_until(lambda: first.is_closed(), 10, "the old connection closed")
    wait_until(lambda: gateway_connections(local_stack) == 1, 10, "a single connection left")
    assert page.get_attribute("#status", "data-status") == "online"


def test_a_refused_refresh_returns_to_the_sign_in_form(local_stack, page, resources):
    # GIVEN a page that refreshes its tokens 3 s after they are issued
    user = new_user(resources)
    open_signed_in(page, local_stack.page + "?refresh_before_exp_s=3597", user)
    # WHEN the user's refresh tokens are revoked (an operator signs them out everywhere)
    pool = resources.user_pool
    cognito(pool.endpoint).admin_user_global_sign_out(UserPoolId=pool.pool_id, Username=user)
    # THEN the refresh fails, and the page is back at the sign-in form with Cognito's reason
    page.wait_for_selector("body[data-view=signin]", timeout=15_000)
    words = page.inner_text("#auth-message")
    assert "session has ended" in words and "revoked" in words, words
    assert page.get_attribute("#status", "data-status") == "offline"
    wait_until(lambda: gateway_connections(local_stack) == 0, 10, "the connection closed")
    assert SESSION_KEY not in dict(stored(page)["session"])


def test_sign_out_closes_the_socket_forgets_the_tokens_and_signing_in_again_brings_the_conversation_back(
        local_stack, page, resources):
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    user = new_user(resources)
    open_signed_in(page, local_stack.page + "?backoff_ms=100&backoff_cap_ms=200", user)
    send(page, "remember me")
    page.wait_for_selector(".turn[data-state=answered]")
    tokens = json.loads(dict(stored(page)["session"])[SESSION_KEY])
    assert tokens["accessToken"] and tokens["refreshToken"] and tokens["idToken"]
    assert gateway_connections(local_stack) == 1
    # WHEN the person signs out
    page.click("#sign-out")
    # THEN the sign-in form is back, the socket is closed, and no reconnect follows
    page.wait_for_selector("body[data-view=signin]")
    assert "signed out" in page.inner_text("#auth-message")
    assert page.is_hidden("#composer") and page.is_hidden("#account")
    assert page.locator(".turn").count() == 0
    wait_until(lambda: sockets[0].is_closed(), 5, "the socket closed")
    wait_until(lambda: gateway_connections(local_stack) == 0, 5, "the gateway's connection gone")
    time.sleep(1.5)  # reconnect delays are at most 0.2 s here
    assert len(sockets) == 1 and gateway_connections(local_stack) == 0
    assert page.get_attribute("#status", "data-status") == "offline"
    # AND no token is kept anywhere: not in sessionStorage any more, and never in localStorage
    kept = stored(page)
    values = [value for _key, value in kept["local"] + kept["session"]]
    assert not any(t in value for t in tokens.values() if isinstance(t, str) and len(t) > 20 for value in values)
    assert SESSION_KEY not in dict(kept["session"])
    # WHEN the same user signs in again THEN their conversation comes back from the history
    sign_in(page, user)
    page.wait_for_selector(".turn[data-state=answered]")
    assert "remember me" in page.locator(".turn").first.inner_text()
    assert socket_token(sockets[-1]) != tokens["accessToken"]


def test_a_page_that_cannot_read_its_config_says_so(local_stack, page):
    page.route("**/config.json", lambda route: route.fulfill(
        status=503, content_type="application/json", body=json.dumps({"message": "no user pool"})))
    page.goto(local_stack.page)
    page.wait_for_selector("body[data-view=error]")
    words = page.inner_text("#boot-message")
    assert "config.json" in words and "503" in words and "no user pool" in words
    assert page.is_hidden("#signin-form") and page.is_hidden("#composer")
