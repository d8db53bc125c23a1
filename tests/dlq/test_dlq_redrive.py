"""Moving DLQ messages back to the jobs queue: dry run first, filters, counts, and no message lost or
doubled when a run is interrupted between sending and deleting."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import boto3
import pytest

from cloudia import dlq
from cloudia.dlq_format import MAX_RECEIVES_REASON
from cloudia.jobs import Job
from tests.dlq.dlq_support import drain, exhaust_receives, fail_permanently, new_job, redrive_ids, total

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dlq_message_ids(sqs, dlq_url: str) -> list[str]:
    return sorted(m.message_id for m in dlq.look(sqs, dlq_url))


def test_dry_run_moves_nothing(sqs, resources, journal):
    # GIVEN three failed jobs in the DLQ
    for reason in ("a", "b", "c"):
        fail_permanently(sqs, resources.dlq_url, reason)

    # WHEN a redrive runs without --apply
    report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, journal_path=journal)

    # THEN it reports the three it would move, and nothing moved
    assert not report.applied and report.method == dlq.METHOD_DRY_RUN
    assert len(report.selected) == 3
    assert report.dlq_before.total == report.dlq_after.total == 3 and report.counts_agree
    assert total(sqs, resources.settings.jobs_queue_url) == 0
    assert dlq.queue_counts(sqs, resources.dlq_url).visible == 3
    assert not journal.exists()


def test_apply_moves_everything_back_with_body_and_attributes_and_the_counts_agree(sqs, resources, journal):
    # GIVEN 23 failed jobs (more than two SQS batches), each with an attribute of its own
    jobs = [fail_permanently(sqs, resources.dlq_url, "provider down", reason_attribute="FailureReason",
                             traceparent=f"00-{i}-01") for i in range(23)]
    originals = {m.message_id: m for m in dlq.look(sqs, resources.dlq_url)}
    progress = []

    # WHEN they are redriven for real (moto has no StartMessageMoveTask: the fallback moves them)
    report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True,
                         journal_path=journal, progress=lambda done, of: progress.append((done, of)))

    # THEN all 23 are on the jobs queue, none left in the DLQ, and the counts agree
    assert report.method == dlq.METHOD_RECEIVE_SEND_DELETE
    assert "StartMessageMoveTask" in report.fallback_reason
    assert report.ok and report.counts_agree
    assert (report.dlq_before.total, report.removed_from_dlq, report.dlq_after.total) == (23, 23, 0)
    assert report.jobs_after.total == 23
    moved = drain(sqs, resources.settings.jobs_queue_url)
    assert redrive_ids(moved) == sorted(originals)
    # AND each keeps its body and attributes, loses its old failure reason and starts a fresh count
    for message in moved:
        original = originals[message["MessageAttributes"]["redriveId"]["StringValue"]]
        assert Job.from_json(message["Body"]) == original.job
        assert message["MessageAttributes"]["traceparent"]["StringValue"] == \
            original.message_attributes["traceparent"]["StringValue"]
        assert {name.lower() for name in message["MessageAttributes"]} == {"traceparent", "redriveid"}
        assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert sorted(Job.from_json(m["Body"]).job_id for m in moved) == sorted(j.job_id for j in jobs)
    # AND progress was reported up to the total
    assert progress[-1] == (23, 23)


def test_a_job_that_reached_the_dlq_by_the_redrive_policy_goes_back_with_a_fresh_receive_count(sqs, resources, journal):
    # GIVEN a job the redrive policy moved to the DLQ after 5 receives
    job = exhaust_receives(sqs, resources.settings.jobs_queue_url, resources.dlq_url)
    [listed] = dlq.look(sqs, resources.dlq_url, dlq.Selector(reasons=(MAX_RECEIVES_REASON,)))
    assert listed.receive_count == 5

    # WHEN the "max receives exceeded" messages are redriven
    report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True, journal_path=journal,
                         selector=dlq.Selector(reasons=(MAX_RECEIVES_REASON,)))

    # THEN it is back on the jobs queue, received for the first time again, with its attributes
    assert report.ok and report.removed_from_dlq == 1
    [back] = drain(sqs, resources.settings.jobs_queue_url)
    assert Job.from_json(back["Body"]) == job
    assert back["Attributes"]["ApproximateReceiveCount"] == "1"
    assert back["MessageAttributes"]["traceparent"]["StringValue"] == "00-abc-01"
    assert total(sqs, resources.dlq_url) == 0


def test_filters_move_only_the_selected_messages(sqs, resources, journal):
    # GIVEN an old timeout, then (later) a newer timeout and a newer validation failure
    old = fail_permanently(sqs, resources.dlq_url, "LLM timeout")
    time.sleep(1.5)
    newer_timeout = fail_permanently(sqs, resources.dlq_url, "LLM timeout")
    newer_invalid = fail_permanently(sqs, resources.dlq_url, "invalid job")
    queue_url = resources.settings.jobs_queue_url

    # WHEN only the messages older than a second are moved
    by_age = dlq.redrive(sqs, resources.dlq_url, queue_url, dlq.Selector(older_than_s=1.0), apply=True,
                         journal_path=journal)
    # THEN only the old one moved
    assert by_age.ok and [m.job.job_id for m in by_age.selected] == [old.job_id]
    assert by_age.dlq_after.total == 2

    # WHEN then only the timeouts are moved
    by_reason = dlq.redrive(sqs, resources.dlq_url, queue_url, dlq.Selector(reasons=("timeout",)), apply=True,
                            journal_path=journal)
    # THEN only the newer timeout moved; the validation failure stays in the DLQ
    assert by_reason.ok and [m.job.job_id for m in by_reason.selected] == [newer_timeout.job_id]
    assert [m.job.job_id for m in dlq.look(sqs, resources.dlq_url)] == [newer_invalid.job_id]
    assert sorted(Job.from_json(m["Body"]).job_id for m in drain(sqs, queue_url)) == \
        sorted([old.job_id, newer_timeout.job_id])


def test_max_messages_bounds_a_run(sqs, resources, journal):
    for _ in range(5):
        fail_permanently(sqs, resources.dlq_url, "x")
    report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True,
                         journal_path=journal, max_messages=2)
    assert report.ok and report.removed_from_dlq == 2
    assert total(sqs, resources.dlq_url) == 3 and total(sqs, resources.settings.jobs_queue_url) == 2


CRASHING_RUN = textwrap.dedent("""
    import os, sys
    import boto3
    from cloudia import dlq

    def crash(sent_so_far):
        # Killed after the first batch was sent and journaled, before it was deleted from the DLQ:
        # no cleanup runs, as with kill -9 or a lost machine.
        os._exit(137)

    dlq_url, queue_url, journal, lease_s = sys.argv[1:5]
    dlq.redrive(boto3.client("sqs"), dlq_url, queue_url, apply=True, journal_path=journal,
                lease_s=int(lease_s), after_send=crash)
""")


def test_a_run_killed_between_send_and_delete_loses_and_doubles_nothing_when_run_again(sqs, resources, journal):
    # GIVEN 25 failed jobs in the DLQ
    for i in range(25):
        fail_permanently(sqs, resources.dlq_url, f"failure {i}")
    originals = dlq_message_ids(sqs, resources.dlq_url)
    queue_url = resources.settings.jobs_queue_url
    lease_s = 2

    # WHEN a redrive process is killed right after sending its first batch, before deleting it
    crashed = subprocess.run([sys.executable, "-c", CRASHING_RUN, resources.dlq_url, queue_url, str(journal),
                              str(lease_s)], cwd=ROOT, timeout=60)
    assert crashed.returncode == 137
    # THEN that batch is on the jobs queue *and* still in the DLQ (its lease hides it for now)
    assert total(sqs, queue_url) == dlq.SQS_BATCH_MAX
    assert total(sqs, resources.dlq_url) == 25

    # WHEN the leases have run out and the redrive is run again
    time.sleep(lease_s + 0.5)
    report = dlq.redrive(sqs, resources.dlq_url, queue_url, apply=True, journal_path=journal)

    # THEN the first batch was only deleted from the DLQ, the rest sent: each job exactly once
    assert report.ok
    assert report.finished_from_journal == dlq.SQS_BATCH_MAX
    assert report.sent == 25 - dlq.SQS_BATCH_MAX
    assert redrive_ids(drain(sqs, queue_url)) == originals
    assert total(sqs, resources.dlq_url) == 0


def test_an_interrupted_run_releases_what_it_did_not_move_and_a_re_run_finishes_without_doubles(sqs, resources,
                                                                                                 journal):
    # GIVEN 15 failed jobs
    for i in range(15):
        fail_permanently(sqs, resources.dlq_url, f"failure {i}")
    originals = dlq_message_ids(sqs, resources.dlq_url)
    queue_url = resources.settings.jobs_queue_url

    def interrupt(sent_so_far):
        raise KeyboardInterrupt  # Ctrl-C between sending a batch and deleting it

    # WHEN the operator interrupts the first batch between send and delete
    with pytest.raises(KeyboardInterrupt):
        dlq.redrive(sqs, resources.dlq_url, queue_url, apply=True, journal_path=journal, after_send=interrupt)
    # THEN every leased message is visible in the DLQ again at once, none waits for its lease
    assert dlq.queue_counts(sqs, resources.dlq_url).visible == 15

    # WHEN the redrive is run again straight away
    report = dlq.redrive(sqs, resources.dlq_url, queue_url, apply=True, journal_path=journal)

    # THEN every job is on the jobs queue exactly once
    assert report.ok and report.finished_from_journal == dlq.SQS_BATCH_MAX
    assert redrive_ids(drain(sqs, queue_url)) == originals
    assert total(sqs, resources.dlq_url) == 0


def test_a_stop_request_ends_the_run_between_batches_with_nothing_half_done(sqs, resources, journal):
    # GIVEN 25 failed jobs
    for i in range(25):
        fail_permanently(sqs, resources.dlq_url, f"failure {i}")
    queue_url = resources.settings.jobs_queue_url
    batches = []

    # WHEN the operator asks the run to stop while its first batch is being moved
    report = dlq.redrive(sqs, resources.dlq_url, queue_url, apply=True, journal_path=journal,
                         after_send=batches.append, stop_requested=lambda: bool(batches))

    # THEN it finishes that batch, stops, says so, and every other message is back in the DLQ at once
    assert report.stopped_early and not report.ok
    assert report.removed_from_dlq == dlq.SQS_BATCH_MAX and report.counts_agree
    assert total(sqs, queue_url) == dlq.SQS_BATCH_MAX
    assert dlq.queue_counts(sqs, resources.dlq_url).visible == 25 - dlq.SQS_BATCH_MAX
    with dlq.RedriveJournal(journal) as left:
        assert left.pending == set()


def test_counts_disagree_when_something_else_writes_to_the_dlq_during_a_run(sqs, resources, journal):
    # GIVEN two failed jobs
    fail_permanently(sqs, resources.dlq_url, "a")
    fail_permanently(sqs, resources.dlq_url, "b")

    def worker_fails_another_job(sent_so_far):
        sqs.send_message(QueueUrl=resources.dlq_url, MessageBody=new_job().to_json())

    # WHEN the worker sends a new failure to the DLQ while the redrive runs
    report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True, journal_path=journal,
                         after_send=worker_fails_another_job, settle_s=0)

    # THEN the run says its counts do not agree (2 before, 2 moved, but 1 after)
    assert report.removed_from_dlq == 2
    assert (report.dlq_expected_after, report.dlq_after.total) == (0, 1)
    assert not report.counts_agree and not report.ok


def test_two_runs_cannot_share_a_journal_at_once(journal):
    with dlq.RedriveJournal(journal):
        with pytest.raises(dlq.DlqError, match="another redrive"):
            dlq.RedriveJournal(journal)


def test_the_journal_keeps_only_ids_sent_and_not_deleted(journal):
    with dlq.RedriveJournal(journal) as first:
        first.record_sent(["m1", "m2", "m3"])
        first.record_deleted(["m1", "m3"])
    with dlq.RedriveJournal(journal) as second:
        assert second.pending == {"m2"}
    assert journal.read_text() == "sent m2\n"


def test_moving_everything_uses_the_sqs_move_task_where_it_exists_and_checks_its_claim(sqs, resources, journal):
    # GIVEN three failed jobs, and an SQS that offers StartMessageMoveTask (as AWS does; moto has none,
    # so the move-task API is a botocore Stubber that reports a task moving 3 messages)
    from botocore.stub import Stubber

    for reason in ("a", "b", "c"):
        fail_permanently(sqs, resources.dlq_url, reason)
    move_api = boto3.client("sqs")
    stub = Stubber(move_api)
    dlq_arn = dlq.queue_arn(sqs, resources.dlq_url)
    stub.add_response("start_message_move_task", {"TaskHandle": "task-1"},
                      {"SourceArn": dlq_arn, "DestinationArn": dlq.queue_arn(sqs, resources.settings.jobs_queue_url)})
    stub.add_response("list_message_move_tasks", {"Results": [
        {"TaskHandle": "task-1", "Status": "RUNNING", "ApproximateNumberOfMessagesMoved": 1,
         "ApproximateNumberOfMessagesToMove": 3}]}, {"SourceArn": dlq_arn, "MaxResults": 10})
    stub.add_response("list_message_move_tasks", {"Results": [
        {"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 3}]}, {"SourceArn": dlq_arn, "MaxResults": 10})
    progress = []

    # WHEN everything is redriven
    with stub:
        report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True,
                             journal_path=journal, move_task_sqs=move_api, settle_s=0,
                             progress=lambda done, of: progress.append((done, of)))

    # THEN the move task did the work, its progress was followed to the end
    stub.assert_no_pending_responses()
    assert report.method == dlq.METHOD_MOVE_TASK and report.removed_from_dlq == 3
    assert progress == [(1, 3), (3, None)]
    assert not journal.exists()
    # AND the counts check caught that the DLQ (which the stub did not really empty) still holds 3
    assert report.dlq_after.total == 3 and not report.counts_agree and not report.ok


def test_binary_attributes_are_shown_and_carried_back_unchanged(sqs, resources, journal):
    # GIVEN a DLQ message with a binary attribute
    payload = bytes(range(8))
    sqs.send_message(QueueUrl=resources.dlq_url, MessageBody=new_job().to_json(),
                     MessageAttributes={"signature": {"DataType": "Binary", "BinaryValue": payload}})
    # WHEN it is listed and redriven
    [listed] = dlq.look(sqs, resources.dlq_url)
    report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True, journal_path=journal)
    # THEN it is shown readably and arrives with the same bytes
    assert listed.as_dict()["messageAttributes"]["signature"] == "base64:AAECAwQFBgc="
    assert report.ok
    [back] = drain(sqs, resources.settings.jobs_queue_url)
    assert back["MessageAttributes"]["signature"]["BinaryValue"] == payload
