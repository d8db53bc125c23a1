"""Jobs that SQS moves to the DLQ by itself (a worker died during the job's last attempt, so nobody told
the user): the worker's DLQ sweep fails the job, tells its user and leaves a copy that says why; an
answered job's late copy is dropped.
And a job given back on its last receive goes back as a fresh message, so SQS never takes it."""
from __future__ import annotations

from cloudia.history import ERROR
from cloudia.jobs import ANSWERED, FAILED, QUEUED, Job
from worker import dead_letters
from worker.decisions import Outcome


def _receive_until_sqs_moves_it(harness) -> None:
    """Receive the job's message as dying workers would, until SQS moves it to the DLQ."""
    for _ in range(harness.settings.resilience.max_receives):
        [message] = harness.sqs.receive_message(QueueUrl=harness.settings.jobs_queue_url,
                                                VisibilityTimeout=0).get("Messages", [])
    assert harness.receive() == []  # the next look moved it


def _sweep(harness, processor) -> int:
    return harness.run(dead_letters.sweep(processor, harness.sqs, harness.settings.jobs_dlq_url))


def test_a_job_sqs_dead_lettered_by_itself_is_failed_and_its_user_told_by_the_sweep(harness):
    # GIVEN a job whose every receive ended with its worker (its user was never told)
    harness.configure()
    connection = harness.connect("ana")
    job = harness.send_job("ana", "lost with my worker")
    _receive_until_sqs_moves_it(harness)

    # WHEN a worker sweeps the DLQ
    settled = _sweep(harness, harness.processor())

    # THEN the job is failed, its user heard why, and the history says it
    assert settled == 1
    errors = [e for e in harness.recorder.events(connection) if e["event"] == "error"]
    assert [(e["jobId"], e["reason"]) for e in errors] == [(job.job_id, "max_receives")]
    assert harness.history.latest("ana", "c1", 5)[-1].role == ERROR
    assert harness.jobs.get(job.job_id)["status"] == FAILED
    # AND the DLQ holds exactly one copy of it, which says why and after how many receives
    [copy] = harness.dlq_messages()
    assert Job.from_json(copy["Body"]) == job
    attributes = {k: v["StringValue"] for k, v in copy["MessageAttributes"].items()}
    assert attributes["FailureClass"] == "max_receives"
    assert attributes["FailureReason"].startswith("max_receives: SQS moved it after")
    assert int(attributes["ReceiveCount"]) >= harness.settings.resilience.max_receives
    # AND the next sweep has nothing left to settle, and tells nobody twice
    harness.sqs.change_message_visibility(QueueUrl=harness.settings.jobs_dlq_url,
                                          ReceiptHandle=copy["ReceiptHandle"], VisibilityTimeout=0)
    assert _sweep(harness, harness.processor()) == 0
    assert len([e for e in harness.recorder.events(connection) if e["event"] == "error"]) == 1
    assert len(harness.dlq_messages()) == 1


def test_the_sweep_leaves_jobs_the_worker_dead_lettered_alone_and_drops_an_answered_jobs_late_copy(harness):
    # GIVEN a job the worker failed itself (its user told), and an answered job whose stale copy SQS moved
    harness.configure()
    harness.fake_llm.set_faults(error_rate=1.0, error_status=400)
    connection = harness.connect("ana")
    failed = harness.send_job("ana", "refused")
    processor = harness.processor()
    harness.run(processor.handle(harness.receive()[0]))
    [told] = harness.dlq_messages()
    harness.sqs.change_message_visibility(QueueUrl=harness.settings.jobs_dlq_url,
                                          ReceiptHandle=told["ReceiptHandle"], VisibilityTimeout=0)
    answered = harness.send_job("ana", "answered already")
    harness.jobs.finish(answered.job_id, ANSWERED)
    _receive_until_sqs_moves_it(harness)
    errors_before = len([e for e in harness.recorder.events(connection) if e["event"] == "error"])

    # WHEN a worker sweeps the DLQ
    assert _sweep(harness, processor) == 1

    # THEN the worker's own copy is untouched; the answered job stays answered, its late copy gone
    # (nothing to redrive), and nobody is told again
    copies = {Job.from_json(m["Body"]).job_id: m for m in harness.dlq_messages()}
    assert set(copies) == {failed.job_id}
    assert copies[failed.job_id]["MessageId"] == told["MessageId"]
    assert harness.jobs.get(answered.job_id)["status"] == ANSWERED
    assert len([e for e in harness.recorder.events(connection) if e["event"] == "error"]) == errors_before


def test_a_job_given_back_on_its_last_receive_returns_as_a_fresh_message_not_to_the_dlq(harness):
    # GIVEN a job on its last receive, while another worker holds its lease
    harness.configure()
    job = harness.send_job("ana", "busy elsewhere at the end")
    for _ in range(harness.settings.resilience.max_receives - 1):
        harness.sqs.receive_message(QueueUrl=harness.settings.jobs_queue_url, VisibilityTimeout=0)
    [last] = harness.receive()
    assert last["Attributes"]["ApproximateReceiveCount"] == str(harness.settings.resilience.max_receives)
    processor = harness.processor()
    processor._leases.acquire(job.job_id)

    # WHEN this worker gives it back to wait for the other one
    assert harness.run(processor.handle(last)) == Outcome.BUSY_ELSEWHERE

    # THEN it is in the jobs queue again as a fresh message (delayed), not in the DLQ
    assert harness.kept_in_queue() == 1
    assert harness.dlq_messages() == []
    assert harness.jobs.get(job.job_id)["status"] == QUEUED
    assert harness.fake_llm.stats()["requests"] == 0
