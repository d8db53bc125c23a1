"""A worker that dies during the LLM call (SIGKILL, OOM, lost host) leaves its job `calling`: the LLM may
have answered, and been paid, just before the crash. By default the redelivery does not call again:
the job goes to the DLQ with its user told, so no answer is ever paid twice. With
`recall_llm_after_crash` it is called again. A call that fails while the worker lives is retried."""
from __future__ import annotations

import boto3

from cloudia.history import ERROR
from cloudia.jobs import ANSWERED, CALLING, FAILED, QUEUED, JobStore, now_ms
from tests.worker.conftest import wait_llm_call_started, wait_until
from worker.processor import BUSY_ELSEWHERE, RETRY

# The killed worker's message comes back after this; the call's mark is stale after
# llm_timeout_s + CALL_WRITES_MARGIN_S (1 + 5 s here).
SHORT_VISIBILITY_S = 2


def _kill_mid_call(harness, worker_process, **resilience):
    settings = harness.configure(llm_timeout_s=1.0, **resilience)
    harness.sqs.set_queue_attributes(QueueUrl=settings.jobs_queue_url,
                                     Attributes={"VisibilityTimeout": str(SHORT_VISIBILITY_S)})
    harness.fake_llm.set_faults(latency_ms=800)
    connection = harness.connect("ana")
    job = harness.send_job("ana", "cut short")
    process = worker_process(settings)
    wait_llm_call_started(harness)
    process.kill()
    process.wait(10)
    harness.fake_llm.set_faults()
    return job, connection


def test_a_call_cut_by_a_crash_is_not_paid_twice_the_job_goes_to_the_dlq_and_its_user_is_told(
        harness, worker_process, start_worker):
    # GIVEN a worker SIGKILLed while its LLM call was in flight
    job, connection = _kill_mid_call(harness, worker_process)
    assert harness.jobs.get(job.job_id)["status"] == CALLING

    # WHEN another worker takes the redelivered message
    running = start_worker(harness.settings)
    dead = wait_until(harness.dlq_messages, timeout_s=30, what="the DLQ copy")
    running.stop()

    # THEN the LLM was not called again, and the job is in the DLQ with why
    assert harness.fake_llm.stats()["requests"] == 1
    assert [m["Body"] for m in dead] == [job.to_json()]
    assert dead[0]["MessageAttributes"]["FailureClass"]["StringValue"] == "interrupted"
    assert dead[0]["MessageAttributes"]["FailureReason"]["StringValue"].startswith("interrupted_call")
    assert harness.queue_counts() == (0, 0)
    # AND its user heard it, the history says it, the job is failed
    errors = [e for e in harness.recorder.events(connection) if e["event"] == "error"]
    assert [(e["jobId"], e["reason"]) for e in errors] == [(job.job_id, "interrupted_call")]
    assert harness.history.latest("ana", "c1", 5)[-1].role == ERROR
    assert harness.jobs.get(job.job_id)["status"] == FAILED
    assert running.worker.outcomes.get("dead_lettered") == 1 and "answered" not in running.worker.outcomes


def test_with_recall_llm_after_crash_the_cut_call_is_made_again(harness, worker_process, start_worker):
    # GIVEN the same crash, with the operator's choice to call again
    job, connection = _kill_mid_call(harness, worker_process, recall_llm_after_crash=True)

    # WHEN another worker takes the redelivered message
    running = start_worker(harness.settings)
    wait_until(lambda: harness.jobs.get(job.job_id)["status"] == ANSWERED, timeout_s=30, what="the answer")
    wait_until(lambda: harness.queue_counts() == (0, 0), what="the delete")
    running.stop()

    # THEN it was answered by a second call
    assert harness.fake_llm.stats()["requests"] == 2
    assert [e["jobId"] for e in harness.recorder.events(connection) if e["event"] == "answer"] == [job.job_id]
    assert harness.dlq_messages() == []


def test_a_call_still_running_elsewhere_is_waited_for_not_repeated(harness):
    # GIVEN a job another worker started calling a moment ago (its lease lost, say, with a Redis restart)
    harness.configure()
    job = harness.send_job("ana", "in progress elsewhere")
    assert harness.jobs.start_call(job.job_id, stale_before_ms=now_ms() - 60_000)

    # WHEN its message is delivered here
    outcome = harness.run(harness.processor().handle(harness.receive()[0]))

    # THEN this worker leaves it alone and looks again later; the LLM saw nothing from it
    assert outcome == BUSY_ELSEWHERE
    assert harness.fake_llm.stats()["requests"] == 0
    assert harness.jobs.get(job.job_id)["status"] == CALLING
    # AND the mark refuses a second caller until it is stale
    assert not harness.jobs.start_call(job.job_id, stale_before_ms=now_ms() - 60_000)
    assert harness.jobs.start_call(job.job_id, stale_before_ms=now_ms() + 1)


def test_a_call_that_fails_while_the_worker_lives_is_retried_not_taken_for_a_crash(harness):
    # GIVEN a provider answering 503
    harness.configure()
    harness.fake_llm.set_faults(error_rate=1.0, error_status=503)
    job = harness.send_job("ana", "try again")

    # WHEN the attempt fails
    outcome = harness.run(harness.processor().handle(harness.receive()[0]))

    # THEN the job is queued again for its retry
    assert outcome == RETRY
    assert harness.jobs.get(job.job_id)["status"] == QUEUED


class _ReplyLostOnce:
    """A DynamoDB client whose first update_item reaches the table but whose reply is lost, so the SDK
    sends the very same request again (botocore's retry after a read timeout)."""

    def __init__(self, client):
        self._client = client
        self.exceptions = client.exceptions

    def update_item(self, **request):
        self._client.update_item(**request)
        return self._client.update_item(**request)


def test_a_retried_call_mark_whose_first_reply_was_lost_is_still_this_calls_own(harness):
    # GIVEN a job, and a table whose first reply to the call mark is lost (the write itself landed)
    harness.configure()
    job = harness.send_job("ana", "slow table")
    flaky = JobStore(_ReplyLostOnce(boto3.client("dynamodb")), harness.settings.jobs_table,
                     harness.settings.resilience)
    # WHEN the worker marks the call (the SDK sends the same write twice)
    # THEN the mark is this call's, not "another worker is calling"
    assert flaky.start_call(job.job_id, stale_before_ms=now_ms() - 60_000)
    # AND a different call is still refused while the mark is fresh
    assert not harness.jobs.start_call(job.job_id, stale_before_ms=now_ms() - 60_000)
