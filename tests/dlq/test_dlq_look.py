"""Listing and inspecting the DLQ: each message with its job, age, failure reason and receive count."""
from __future__ import annotations

import time

import pytest

from cloudia import dlq
from cloudia.dlq_format import MAX_RECEIVES_REASON
from cloudia.jobs import now_ms
from tests.dlq.dlq_support import exhaust_receives, fail_permanently, total


@pytest.mark.parametrize("reason_attribute", ["failureReason", "FailureReason"])
def test_list_shows_each_job_with_the_reason_the_worker_recorded(sqs, resources, reason_attribute):
    # GIVEN two jobs the worker sent to the DLQ as permanent failures
    first = fail_permanently(sqs, resources.dlq_url, "provider rejected the request (400)",
                             reason_attribute=reason_attribute)
    second = fail_permanently(sqs, resources.dlq_url, "message too long", reason_attribute=reason_attribute)

    # WHEN the DLQ is listed
    messages = dlq.look(sqs, resources.dlq_url)

    # THEN both are there, oldest first, with their jobs, reasons and no earlier receive
    assert [m.job.job_id for m in messages] == [first.job_id, second.job_id]
    assert [m.failure_reason for m in messages] == ["provider rejected the request (400)", "message too long"]
    assert [m.receive_count for m in messages] == [0, 0]
    assert all(0 <= m.age_s() < 60 for m in messages)
    # AND looking took nothing away: both are visible again at once
    assert dlq.queue_counts(sqs, resources.dlq_url).visible == 2


def test_a_job_moved_by_the_redrive_policy_shows_max_receives_exceeded_and_its_receive_count(sqs, resources):
    # GIVEN a job received 5 times on the jobs queue without being deleted (the redrive policy moves it)
    job = exhaust_receives(sqs, resources.settings.jobs_queue_url, resources.dlq_url)

    # WHEN the DLQ is listed
    [message] = dlq.look(sqs, resources.dlq_url)

    # THEN it carries no reason of its own: "max receives exceeded", with its 5 receives
    assert message.job.job_id == job.job_id
    assert message.failure_reason == MAX_RECEIVES_REASON
    assert message.receive_count == 5


def test_the_receive_count_the_worker_recorded_is_shown_however_often_the_dlq_was_looked_at(sqs, resources):
    # GIVEN a job the worker dead-lettered after its 5th receive from the jobs queue
    job = fail_permanently(sqs, resources.dlq_url, "exhausted_status_503: 5 attempts",
                           ReceiveCount="5")
    # WHEN the DLQ is looked at several times
    for _ in range(3):
        [message] = dlq.look(sqs, resources.dlq_url)
    # THEN the count shown is the jobs queue's, not the DLQ's own
    assert message.job.job_id == job.job_id
    assert message.receive_count == 5


def test_inspect_finds_a_message_by_job_id_or_message_id(sqs, resources):
    # GIVEN three failed jobs in the DLQ
    fail_permanently(sqs, resources.dlq_url, "reason a")
    wanted = fail_permanently(sqs, resources.dlq_url, "reason b")
    fail_permanently(sqs, resources.dlq_url, "reason c")

    # WHEN one is looked up by its job id, then by the message id found
    by_job = dlq.find(sqs, resources.dlq_url, wanted.job_id)
    by_message = dlq.find(sqs, resources.dlq_url, by_job.message_id)

    # THEN both give that job with its whole content and reason
    assert by_job.job == wanted and by_message.job == wanted
    assert by_job.failure_reason == "reason b"
    details = by_job.as_dict()
    assert details["job"]["message"] == wanted.message and details["reason"] == "reason b"
    # AND an unknown id finds nothing, and all three stay in the DLQ
    assert dlq.find(sqs, resources.dlq_url, "job-unknown") is None
    assert total(sqs, resources.dlq_url) == 3


def test_list_filters_by_reason_and_age(sqs, resources):
    # GIVEN an older timeout failure and, a moment later, a newer timeout and a validation failure
    old = fail_permanently(sqs, resources.dlq_url, "LLM timeout after retries")
    time.sleep(1.2)
    new_timeout = fail_permanently(sqs, resources.dlq_url, "llm TIMEOUT")
    new_invalid = fail_permanently(sqs, resources.dlq_url, "invalid job")

    # WHEN the DLQ is listed with a reason filter, and every selector is judged at one instant
    at_ms = now_ms()
    listed = dlq.look(sqs, resources.dlq_url, dlq.Selector(reasons=("timeout",)))
    everything = dlq.look(sqs, resources.dlq_url)

    def job_ids(selector):
        return [m.job.job_id for m in everything if selector.matches(m, at_ms)]

    # THEN each filter selects exactly its messages (reason: case-insensitive substring)
    assert [m.job.job_id for m in listed] == [old.job_id, new_timeout.job_id]
    assert job_ids(dlq.Selector(older_than_s=0.6)) == [old.job_id]
    assert job_ids(dlq.Selector(newer_than_s=0.6)) == [new_timeout.job_id, new_invalid.job_id]
    assert job_ids(dlq.Selector(newer_than_s=0.6, reasons=("timeout",))) == [new_timeout.job_id]
    assert job_ids(dlq.Selector(reasons=(MAX_RECEIVES_REASON,))) == []


def test_an_unknown_queue_is_a_clear_error(sqs, resources):
    with pytest.raises(dlq.DlqError, match="does not exist"):
        dlq.look(sqs, resources.dlq_url + "-missing")


def test_an_empty_age_window_is_refused():
    with pytest.raises(dlq.DlqError, match="select nothing"):
        dlq.Selector(older_than_s=7200, newer_than_s=3600)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400),
                                           ("1d", 86400), ("250ms", 0.25), ("1.5s", 1.5)])
def test_durations_parse(text, seconds):
    assert dlq.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "", "2 hours", "-1h", "h", "1h-", "1y"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        dlq.parse_duration(text)
