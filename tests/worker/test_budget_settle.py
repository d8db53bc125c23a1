"""The worker settles each job's budget reservation once, when the job ends: answered, the provider's
real usage replaces it; failed for good (by the worker or by SQS), it is released; retried, it stays
reserved. A redelivered job settles nothing twice, and a call never sends more than was reserved."""
from __future__ import annotations

import threading
import time

import pytest

from cloudia import limits
from cloudia.chat import ChatService
from cloudia.frames import SendMessage
from cloudia.llm import build_provider
from cloudia.llm.fake import count_tokens
from cloudia.schema import budget_hold_key, budget_key
from tests.worker.conftest import wait_until
from worker import dead_letters
from worker.decisions import Outcome

# The admissions here run outside Lambda, with no invocation's deadline to register.
pytestmark = pytest.mark.filterwarnings("ignore:Couldn't determine the remaining time left")

# A maximum-size message whose tokens are known: " a" is one token (cl100k_base, o200k_base) and one
# word for the fake LLM.
BIG = "a " * 4000


class Recording:
    """The configured provider, recording what each call sent and the usage it reported."""

    def __init__(self, inner):
        self._inner = inner
        self.name = inner.name
        self.sent: list[list[dict]] = []
        self.usage: list[int] = []

    async def complete(self, messages, on_token=None, on_finish=None):
        self.sent.append(messages)
        completion = await self._inner.complete(messages, on_token, on_finish)
        self.usage.append(completion.input_tokens + completion.output_tokens)
        return completion

    async def aclose(self):
        await self._inner.aclose()


def recording(harness) -> Recording:
    return Recording(build_provider(harness.settings.llm_provider, harness.settings))


def send(service: ChatService, text: str, client_message_id: str, user_id: str = "ana", conversation_id: str = "c1"):
    """What the sendMessage function does with a message: admit it (reserving its budget) and queue it."""
    return service.send_message(user_id, SendMessage.model_validate(
        {"action": "sendMessage", "conversationId": conversation_id, "clientMessageId": client_message_id,
         "message": text}))


def used_today(harness, user_id: str = "ana") -> int:
    return int(harness.redis.get(budget_key(user_id, time.strftime("%Y-%m-%d", time.gmtime()))) or 0)


def held(harness, job_id: str) -> int | None:
    hold = limits.Hold.parse(harness.redis.get(budget_hold_key(job_id)))
    return hold.tokens if hold else None


def away_from_midnight() -> None:
    """The budget counts per UTC day: start where the day will not turn."""
    to_midnight_s = 86400 - time.time() % 86400
    if to_midnight_s < 60:
        time.sleep(to_midnight_s + 0.1)


def message_of(harness, job_id: str, wait_s: int = 0) -> dict:
    for message in harness.receive(wait_s):
        if f'"job_id": "{job_id}"' in message["Body"]:
            return message
    raise AssertionError(f"no message of {job_id} on the queue")


def test_an_answered_job_settles_its_reservation_with_the_real_usage_once(harness):
    # GIVEN a message admitted in a conversation: the most its call can cost is reserved for its job
    away_from_midnight()
    provider = recording(harness)
    processor = harness.processor(provider=provider)
    service = ChatService.from_settings(harness.settings)
    first = send(service, "what is a token budget?", "m-1")
    harness.run(processor.handle(message_of(harness, first.job_id)))
    before = used_today(harness)
    question = "and how does the worker settle it? " * 10
    accepted = send(service, question, "m-2")
    reserved = held(harness, accepted.job_id)
    assert used_today(harness) == before + reserved
    assert accepted.budget["remaining"] == harness.settings.resilience.daily_token_budget - before - reserved

    # WHEN the worker answers it
    message = message_of(harness, accepted.job_id)
    assert harness.run(processor.handle(message)) == Outcome.ANSWERED

    # THEN what it sent is what the admission counted (the context and the message), nothing more
    sent = provider.sent[-1]
    assert [m["content"] for m in sent][-1] == question and len(sent) == 3
    assert limits.call_tokens([m["content"] for m in sent], harness.settings.resilience.llm_max_tokens) == reserved
    # AND the reservation is replaced by the real usage the provider reported (the fake counts words)
    answer = harness.history.latest("ana", "c1", 5)[-1].message
    real = sum(count_tokens(m["content"]) for m in sent) + count_tokens(answer)
    assert provider.usage[-1] == real < reserved
    assert used_today(harness) == before + real
    assert held(harness, accepted.job_id) is None

    # AND a redelivery of the same message is answered again from the history, settling nothing twice
    harness.sqs.send_message(QueueUrl=harness.settings.jobs_queue_url, MessageBody=message["Body"])
    assert harness.run(processor.handle(message_of(harness, accepted.job_id, wait_s=1))) == Outcome.DUPLICATE
    assert used_today(harness) == before + real


def test_a_permanently_failed_job_releases_its_reservation_once(harness):
    # GIVEN a provider that refuses every request (400), a job admitted, and another job's reservation
    away_from_midnight()
    harness.fake_llm.set_faults(error_rate=1.0, error_status=400)
    processor = harness.processor()
    service = ChatService.from_settings(harness.settings)
    service.limits.admit("ana", 5000, job_id="job-another")
    accepted = send(service, "refuse me", "m-1")
    assert used_today(harness) == 5000 + held(harness, accepted.job_id)
    # WHEN the worker fails it for good
    message = message_of(harness, accepted.job_id)
    assert harness.run(processor.handle(message)) == Outcome.DEAD_LETTERED
    # THEN its reservation is given back: the user got no answer
    assert used_today(harness) == 5000
    assert held(harness, accepted.job_id) is None
    # AND the same message delivered again fails again without giving anything back twice
    harness.sqs.send_message(QueueUrl=harness.settings.jobs_queue_url, MessageBody=message["Body"])
    assert harness.run(processor.handle(message_of(harness, accepted.job_id, wait_s=1))) == Outcome.DEAD_LETTERED
    assert used_today(harness) == 5000
    assert held(harness, "job-another") == 5000


def test_a_retried_job_keeps_its_reservation_until_it_is_answered(harness):
    # GIVEN a job admitted while the provider is unavailable (503)
    away_from_midnight()
    harness.configure(backoff_base_s=0.2)
    harness.fake_llm.set_faults(error_rate=1.0, error_status=503)
    provider = recording(harness)
    processor = harness.processor(provider=provider)
    service = ChatService.from_settings(harness.settings)
    accepted = send(service, "try me again", "m-1")
    reserved = held(harness, accepted.job_id)
    # WHEN its first attempt fails and is to be retried
    assert harness.run(processor.handle(message_of(harness, accepted.job_id))) == Outcome.RETRY
    # THEN it is still reserved, whole
    assert held(harness, accepted.job_id) == reserved == used_today(harness)
    # AND once it is answered, the reservation becomes the real usage
    harness.fake_llm.reset_faults()
    message = wait_until(lambda: next(iter(harness.receive(wait_s=1)), None), what="the retry")
    assert harness.run(processor.handle(message)) == Outcome.ANSWERED
    assert used_today(harness) == provider.usage[-1] < reserved
    assert held(harness, accepted.job_id) is None


def test_a_job_sqs_dead_lettered_by_itself_releases_its_reservation(harness):
    # GIVEN an admitted job whose every receive ended with its worker, so SQS moved it to the DLQ
    away_from_midnight()
    harness.configure()
    service = ChatService.from_settings(harness.settings)
    accepted = send(service, "lost with my worker", "m-1")
    assert used_today(harness) == held(harness, accepted.job_id) > 0
    for _ in range(harness.settings.resilience.max_receives):
        harness.sqs.receive_message(QueueUrl=harness.settings.jobs_queue_url, VisibilityTimeout=0)
    assert harness.receive() == []
    # WHEN a worker's sweep of the DLQ fails the job
    processor = harness.processor()
    assert harness.run(dead_letters.sweep(processor, harness.sqs, harness.settings.jobs_dlq_url)) == 1
    # THEN its reservation is given back, once
    assert used_today(harness) == 0
    assert held(harness, accepted.job_id) is None


def test_a_call_sends_no_more_than_its_admission_reserved(harness):
    # GIVEN two messages sent one after the other, the second before the first is answered: the
    # second's reservation counts the first message as its context, not the first's answer
    away_from_midnight()
    harness.fake_llm.set_profile("burst")  # whole answers at once
    provider = recording(harness)
    processor = harness.processor(provider=provider)
    service = ChatService.from_settings(harness.settings)
    first, second = send(service, BIG, "m-1"), send(service, BIG, "m-2")
    reserved = held(harness, second.job_id)
    assert reserved == limits.call_tokens([BIG, BIG], harness.settings.resilience.llm_max_tokens)
    by_job: dict[str, dict] = {}

    def both_received() -> bool:
        for message in harness.receive():
            by_job[next(j for j in (first.job_id, second.job_id) if j in message["Body"])] = message
        return len(by_job) == 2

    wait_until(both_received, what="both messages")
    # WHEN the first is answered, then the second is called (its context has grown by that answer)
    assert harness.run(processor.handle(by_job[first.job_id])) == Outcome.ANSWERED
    assert harness.run(processor.handle(by_job[second.job_id])) == Outcome.ANSWERED
    # THEN the second call left out the oldest messages rather than cost more than was reserved
    sent = provider.sent[-1]
    max_tokens = harness.settings.resilience.llm_max_tokens
    assert limits.call_tokens([m["content"] for m in sent], max_tokens) <= reserved
    assert sent[0]["role"] == "user" and sent[-1]["content"] == BIG
    assert provider.usage[-1] <= reserved
    assert used_today(harness) == sum(provider.usage)


def test_a_burst_of_twenty_maximum_size_messages_answered_meanwhile_ends_within_the_budget(harness, start_worker):
    # GIVEN the default budget (50,000 tokens a day) and a worker answering at once, as the burst goes on
    away_from_midnight()
    settings = harness.configure(rate_limit_per_minute=1000)  # the budget is under test, not the rate limit
    limit = settings.resilience.daily_token_budget
    assert limit == 50_000
    harness.fake_llm.set_profile("burst")
    provider = recording(harness)
    start_worker(settings, provider=provider)
    service = ChatService.from_settings(settings)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(used_today(harness))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # WHEN the user sends 20 maximum-size messages in one conversation, one every quarter second
    admitted, refused = [], []
    try:
        for i in range(20):
            try:
                admitted.append(send(service, BIG, f"m-{i}").job_id)
            except limits.BudgetExceeded as refusal:
                refused.append(refusal)
            time.sleep(0.25)
        wait_until(lambda: all(harness.jobs.get(j)["status"] == "answered" for j in admitted), timeout_s=60,
                   what="every admitted message answered")
        wait_until(lambda: all(held(harness, j) is None for j in admitted), what="every reservation settled")
    finally:
        stop.set()
        sampler.join(5)
    # THEN the counter was never above the limit, and ends at what the calls really used
    assert max(samples) <= limit, max(samples)
    assert used_today(harness) == sum(provider.usage) <= limit
    assert len(provider.usage) == len(admitted)
    # AND once the budget could not pay for the next call, the message was refused with the reason
    assert admitted and refused, (len(admitted), len(refused))
    assert {r.reason for r in refused} == {"budget_exceeded"}
    assert all(r.budget.limit == limit and r.needed_tokens > r.budget.remaining for r in refused)
