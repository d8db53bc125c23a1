"""A job its user retried from the page is not run a second time by the operator's redrive: its DLQ
copy (of the attempt the retry replaced) is left out and deleted, whichever way the redrive moves
messages, while the copy of the retried attempt's own failure is redriven as any other."""
from __future__ import annotations

import dataclasses

import boto3
import pytest

from cloudia import aws, dlq
from cloudia.dlq_cli import main
from cloudia.jobs import FAILED, Job, JobStore
from tests.dlq.dlq_support import drain, fail_permanently, new_job, record_job, total


@pytest.fixture
def jobs(resources) -> JobStore:
    settings = resources.settings
    return JobStore.of(settings, aws.dynamodb(settings.resilience))


def failed(jobs: JobStore, sqs, resources, job: Job | None = None) -> Job:
    """A job the worker failed for good: its row failed, its copy in the DLQ."""
    job = job or new_job()
    record_job(resources.settings, job)
    jobs.finish(job.job_id, FAILED, "status_400: refused")
    fail_permanently(sqs, resources.dlq_url, "status_400: refused", job=job)
    return job


def retried(jobs: JobStore, job: Job) -> Job:
    """What the `retry` action does to the row; the job as its new message carries it."""
    retries = jobs.retry_failed(job.job_id, job.user_id)
    assert retries is not None
    return dataclasses.replace(job, retry=retries)


def test_the_dlq_copy_of_a_job_retried_since_is_not_redriven_and_leaves_the_dlq(sqs, resources, journal, jobs):
    # GIVEN two failed jobs in the DLQ, one of which its user retried from the page (it is queued again)
    kept, retried_job = failed(jobs, sqs, resources), failed(jobs, sqs, resources)
    retried(jobs, retried_job)
    # WHEN the operator redrives everything (moto has no move task: the receive/send/delete path)
    report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True,
                         journal_path=journal, jobs=jobs)
    # THEN only the other job went back to the jobs queue; the retried one's copy was deleted, not sent
    moved = drain(sqs, resources.settings.jobs_queue_url)
    assert [Job.from_json(m["Body"]).job_id for m in moved] == [kept.job_id]
    assert [m.job.job_id for m in report.superseded] == [retried_job.job_id]
    assert total(sqs, resources.dlq_url) == 0
    assert report.ok and report.sent == 1 and report.removed_from_dlq == 2


def test_a_second_redrive_does_not_run_it_either(sqs, resources, journal, jobs):
    job = failed(jobs, sqs, resources)
    retried(jobs, job)
    first = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True,
                        journal_path=journal, jobs=jobs)
    second = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True,
                         journal_path=journal, jobs=jobs)
    assert (first.sent, second.sent) == (0, 0)
    assert total(sqs, resources.settings.jobs_queue_url) == 0


def test_the_copy_of_the_retried_attempts_own_failure_is_redriven_and_the_older_one_is_not(sqs, resources,
                                                                                         journal, jobs):
    # GIVEN a job that failed, was retried, and failed again: two copies in the DLQ, one per attempt
    job = failed(jobs, sqs, resources)
    again = retried(jobs, job)
    jobs.finish(job.job_id, FAILED, "status_400: refused again")
    fail_permanently(sqs, resources.dlq_url, "status_400: refused again", job=again)
    # WHEN the operator redrives
    report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True,
                         journal_path=journal, jobs=jobs)
    # THEN the job goes back once: the last attempt's copy (it carries the retry), not the first's
    [moved] = drain(sqs, resources.settings.jobs_queue_url)
    assert Job.from_json(moved["Body"]) == again
    assert [m.job for m in report.superseded] == [job]


def test_a_dry_run_lists_the_superseded_copies_apart_and_deletes_nothing(sqs, resources, journal, jobs):
    kept, job = failed(jobs, sqs, resources), failed(jobs, sqs, resources)
    retried(jobs, job)
    report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, journal_path=journal, jobs=jobs)
    assert [m.job.job_id for m in report.selected] == [kept.job_id]
    assert [m.job.job_id for m in report.superseded] == [job.job_id]
    assert total(sqs, resources.dlq_url) == 2 and report.counts_agree


def test_before_a_move_task_the_superseded_copies_are_deleted_so_the_task_cannot_move_them(sqs, resources,
                                                                                         journal, jobs):
    # GIVEN a retried job's copy and another failed job's, and an SQS that offers StartMessageMoveTask
    # (a botocore Stubber, as moto has none)
    from botocore.stub import Stubber

    kept, job = failed(jobs, sqs, resources), failed(jobs, sqs, resources)
    retried(jobs, job)
    move_api = boto3.client("sqs")
    stub = Stubber(move_api)
    dlq_arn = dlq.queue_arn(sqs, resources.dlq_url)
    seen_by_the_task = []

    class WatchedMoveApi:
        """The stubbed API, noting what the DLQ holds when the task starts."""

        def start_message_move_task(self, **kwargs):
            seen_by_the_task.extend(m.job.job_id for m in dlq.look(sqs, resources.dlq_url, lease_s=1))
            return move_api.start_message_move_task(**kwargs)

        def __getattr__(self, name):
            return getattr(move_api, name)

    stub.add_response("start_message_move_task", {"TaskHandle": "task-1"},
                      {"SourceArn": dlq_arn, "DestinationArn": dlq.queue_arn(sqs, resources.settings.jobs_queue_url)})
    stub.add_response("list_message_move_tasks", {"Results": [
        {"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 1}]}, {"SourceArn": dlq_arn, "MaxResults": 10})
    # WHEN everything is redriven
    with stub:
        report = dlq.redrive(sqs, resources.dlq_url, resources.settings.jobs_queue_url, apply=True,
                             journal_path=journal, move_task_sqs=WatchedMoveApi(), settle_s=0, jobs=jobs)
    # THEN when the task started only the other job's copy was left for it to move
    assert report.method == dlq.METHOD_MOVE_TASK
    assert seen_by_the_task == [kept.job_id]
    assert [m.job.job_id for m in report.superseded] == [job.job_id]
    assert report.removed_from_dlq == 2  # the task's one and the superseded one


def test_the_cli_leaves_out_the_copies_of_retried_jobs_when_it_knows_the_jobs_table(sqs, resources, jobs,
                                                                                    tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JOBS_QUEUE_URL", resources.settings.jobs_queue_url)
    monkeypatch.setenv("JOBS_DLQ_URL", resources.dlq_url)
    monkeypatch.setenv("JOBS_TABLE", resources.settings.jobs_table)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    kept, job = failed(jobs, sqs, resources), failed(jobs, sqs, resources)
    retried(jobs, job)
    assert main(["redrive", "--apply", "--settle", "0s"]) == 0
    out = capsys.readouterr().out
    assert "moved 1 " in out and "left out and deleted 1 whose job its user retried since" in out
    assert [Job.from_json(m["Body"]).job_id for m in drain(sqs, resources.settings.jobs_queue_url)] == [kept.job_id]


def test_a_first_send_keeps_the_body_it_always_had():
    # A job never retried says nothing of retries: workers and tools that predate them read it as before.
    job = new_job()
    assert "retry" not in job.to_json()
    assert Job.from_json(job.to_json()) == job
    assert Job.from_json(dataclasses.replace(job, retry=2).to_json()).retry == 2
