"""Moving DLQ messages back to the jobs queue: with SQS's `StartMessageMoveTask` when everything
moves and the operation exists, else batch by batch, leased, sent, journaled, then deleted; copies a
retry superseded are left out. Each message ends in exactly one place (docs/architecture.md, "The
DLQ tool")."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import boto3
from botocore.exceptions import ClientError

from cloudia import aws, dlq_format
from cloudia.dlq.journal import RedriveJournal, default_journal_path
from cloudia.dlq.messages import DlqError, DlqMessage, Selector
from cloudia.dlq.queues import (DEFAULT_LEASE_S, QueueCounts, lease, look, queue_arn, queue_counts,
                                release, superseded)
from cloudia.jobs import now_ms
from cloudia.settings import Resilience

# How long to re-read SQS's approximate counts before calling them in disagreement.
DEFAULT_SETTLE_S = 30.0
COUNT_POLL_S = 1.0
MOVE_TASK_POLL_S = 2.0
MOVE_TASK_RUNNING = "RUNNING"

Progress = Callable[[int, "int | None"], None]

METHOD_DRY_RUN = "dry-run"
METHOD_MOVE_TASK = "StartMessageMoveTask"
METHOD_RECEIVE_SEND_DELETE = "receive/send/delete"


@dataclass
class RedriveReport:
    applied: bool
    method: str
    selector: Selector
    dlq_before: QueueCounts
    jobs_before: QueueCounts
    dlq_after: QueueCounts | None = None
    jobs_after: QueueCounts | None = None
    selected: list[DlqMessage] = field(default_factory=list)
    # Sent to the jobs queue by this run.
    sent: int = 0
    # Sent by an interrupted earlier run (found in the journal): deleted here, not sent again.
    finished_from_journal: int = 0
    # Deleted from the DLQ by this run (sent now or earlier).
    removed_from_dlq: int = 0
    # SQS refused to send these: they stay in the DLQ.
    send_failures: list[str] = field(default_factory=list)
    # Sent and journaled but the delete failed: a re-run deletes them without sending again.
    delete_failures: list[str] = field(default_factory=list)
    fallback_reason: str = ""
    # The run was asked to stop and did, between two batches; a re-run moves the rest.
    stopped_early: bool = False
    # Copies a retry of their job replaced (docs/architecture.md, "Copies a retry superseded"): never
    # sent; deleted from the DLQ by an applied run (counted in `removed_from_dlq`), only listed by a
    # dry run.
    superseded: list[DlqMessage] = field(default_factory=list)

    @property
    def dlq_expected_after(self) -> int:
        return self.dlq_before.total - self.removed_from_dlq

    @property
    def counts_agree(self) -> bool:
        return self.dlq_after is not None and self.dlq_after.total == self.dlq_expected_after

    @property
    def ok(self) -> bool:
        return self.counts_agree and not self.send_failures and not self.delete_failures and not self.stopped_early


def redrive(
    sqs,
    dlq_url: str,
    target_url: str,
    selector: Selector = Selector(),
    apply: bool = False,
    journal_path: str | os.PathLike | None = None,
    lease_s: int = DEFAULT_LEASE_S,
    max_messages: int | None = None,
    use_move_task: bool = True,
    settle_s: float = DEFAULT_SETTLE_S,
    progress: Progress | None = None,
    after_send: Callable[[int], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    move_task_sqs=None,
    jobs=None,
) -> RedriveReport:
    """Move the DLQ messages `selector` matches back to `target_url`; without `apply`, only report.

    `after_send(sent_so_far)` runs after each batch is sent and journaled, before it is deleted from
    the DLQ: the point where an interruption is hardest to survive. `stop_requested()` is asked
    before each batch: a run stops between batches, never inside one. `move_task_sqs` is the client
    used to try `StartMessageMoveTask` (default: one that does not retry, so a missing operation
    fails fast). `jobs` reads a job's row (`JobStore.get`): with it, copies a retry superseded are
    left out and deleted from the DLQ.
    """
    if dlq_url.rstrip("/") == target_url.rstrip("/"):
        raise DlqError(f"the DLQ and the queue to move its messages to are the same queue: {dlq_url}")
    dlq_before = queue_counts(sqs, dlq_url)
    jobs_before = queue_counts(sqs, target_url)
    report = RedriveReport(apply, METHOD_DRY_RUN, selector, dlq_before, jobs_before)

    if not apply:
        looked = look(sqs, dlq_url, selector, limit=None, lease_s=lease_s)
        report.superseded = [m for m in looked if superseded(m, jobs)]
        left_out = {m.message_id for m in report.superseded}
        report.selected = [m for m in looked if m.message_id not in left_out][:max_messages]
    else:
        moved_by_task = False
        if use_move_task and selector.selects_everything and max_messages is None:
            if jobs is not None:  # a move task moves what it finds: the superseded copies go first
                _drop_superseded(sqs, dlq_url, jobs, lease_s, report)
            moved_by_task = _try_move_task(sqs, move_task_sqs, dlq_url, target_url, report, progress)
        if not moved_by_task:
            report.method = METHOD_RECEIVE_SEND_DELETE
            path = journal_path or default_journal_path(dlq_url, target_url)
            with RedriveJournal(path) as journal:
                _receive_send_delete(sqs, dlq_url, target_url, selector, journal, lease_s, max_messages,
                                     report, progress, after_send, stop_requested, jobs)

    report.jobs_after = queue_counts(sqs, target_url)
    report.dlq_after = _settled_counts(sqs, dlq_url, report.dlq_expected_after, settle_s)
    return report


def _settled_counts(sqs, url: str, expected_total: int, settle_s: float) -> QueueCounts:
    deadline = time.monotonic() + settle_s
    while True:
        counts = queue_counts(sqs, url)
        if counts.total == expected_total or time.monotonic() >= deadline:
            return counts
        time.sleep(COUNT_POLL_S)


def _receive_send_delete(sqs, dlq_url, target_url, selector, journal, lease_s, max_messages, report,
                         progress, after_send, stop_requested, jobs=None) -> None:
    held: dict[str, DlqMessage] = {}  # leased and not deleted: released at the end
    looked_at = 0  # progress counts messages examined, of the DLQ's size: filters decide how many move
    # A failure the worker sends while the run goes on is not part of it (and a run that kept
    # moving new arrivals might never end).
    started_ms = now_ms()
    try:
        for batch in lease(sqs, dlq_url, lease_s):
            if stop_requested is not None and stop_requested():
                held.update((m.message_id, m) for m in batch)  # received but untouched: release it
                report.stopped_early = True
                break
            at_ms = now_ms()
            held.update((m.message_id, m) for m in batch)
            looked_at += len(batch)
            chosen = [m for m in batch if m.sent_at_ms <= started_ms and selector.matches(m, at_ms)]
            # Sent by an earlier run (in the journal): only deleted below, whatever its job's state.
            stale = [m for m in chosen if m.message_id not in journal.pending and superseded(m, jobs)]
            if stale:
                _remove_superseded(sqs, dlq_url, stale, report, held)
                chosen = [m for m in chosen if m not in stale]
            if max_messages is not None:
                chosen = chosen[:max(0, max_messages - len(report.selected))]
            report.selected.extend(chosen)
            sent_earlier = [m for m in chosen if m.message_id in journal.pending]
            to_send = [m for m in chosen if m.message_id not in journal.pending]

            sent_now = _send(sqs, target_url, to_send, report)
            journal.record_sent(m.message_id for m in sent_now)
            report.sent += len(sent_now)
            if after_send is not None and sent_now:
                after_send(report.sent)

            deleted = _delete(sqs, dlq_url, sent_earlier + sent_now, report)
            journal.record_deleted(m.message_id for m in deleted)
            earlier_ids = {m.message_id for m in sent_earlier}
            report.finished_from_journal += sum(1 for m in deleted if m.message_id in earlier_ids)
            report.removed_from_dlq += len(deleted)
            for m in deleted:
                held.pop(m.message_id, None)
            if progress is not None:
                progress(looked_at, max(looked_at, report.dlq_before.total))
            if max_messages is not None and len(report.selected) >= max_messages:
                break
    finally:
        # Unselected and unsent messages become visible again now rather than after the lease;
        # sent-but-undeleted ones are safe either way (the journal has them).
        try:
            release(sqs, dlq_url, held.values())
        except ClientError:
            pass  # they reappear when their lease ends


def _remove_superseded(sqs, dlq_url: str, messages: list[DlqMessage], report: RedriveReport,
                       held: dict[str, DlqMessage] | None = None) -> None:
    """Delete copies a retry superseded from the DLQ (one not deleted stays, and a re-run finds it)."""
    response = sqs.delete_message_batch(
        QueueUrl=dlq_url, Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)])
    for failure in response.get("Failed", []):
        message = messages[int(failure["Id"])]
        report.send_failures.append(f"{message.message_id}: superseded by a retry of its job, but not deleted: "
                                    f"{failure.get('Code')} {failure.get('Message', '')}".strip())
    deleted = [messages[int(ok["Id"])] for ok in response.get("Successful", [])]
    report.superseded.extend(deleted)
    report.removed_from_dlq += len(deleted)
    for m in deleted:
        if held is not None:
            held.pop(m.message_id, None)


def _drop_superseded(sqs, dlq_url: str, jobs, lease_s: int, report: RedriveReport) -> None:
    """One pass over the DLQ before a move task: the superseded copies deleted, the rest let go."""
    held: dict[str, DlqMessage] = {}
    try:
        for batch in lease(sqs, dlq_url, lease_s):
            held.update((m.message_id, m) for m in batch)
            stale = [m for m in batch if superseded(m, jobs)]
            if stale:
                _remove_superseded(sqs, dlq_url, stale, report, held)
    finally:
        try:
            release(sqs, dlq_url, held.values())
        except ClientError:
            pass  # they reappear when their lease ends


def _send(sqs, target_url: str, messages: list[DlqMessage], report: RedriveReport) -> list[DlqMessage]:
    if not messages:
        return []
    entries = []
    for index, message in enumerate(messages):
        attributes = dlq_format.redriven_attributes(message.message_attributes, message.message_id)
        entry = {"Id": str(index), "MessageBody": message.body, "MessageAttributes": attributes}
        if "AWSTraceHeader" in message.attributes:  # keep the X-Ray trace of the original request
            entry["MessageSystemAttributes"] = {
                "AWSTraceHeader": {"DataType": "String", "StringValue": message.attributes["AWSTraceHeader"]}
            }
        entries.append(entry)
    response = sqs.send_message_batch(QueueUrl=target_url, Entries=entries)
    for failure in response.get("Failed", []):
        message = messages[int(failure["Id"])]
        report.send_failures.append(f"{message.message_id}: {failure.get('Code')} {failure.get('Message', '')}".strip())
    return [messages[int(ok["Id"])] for ok in response.get("Successful", [])]


def _delete(sqs, dlq_url: str, messages: list[DlqMessage], report: RedriveReport) -> list[DlqMessage]:
    if not messages:
        return []
    response = sqs.delete_message_batch(
        QueueUrl=dlq_url,
        Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)],
    )
    for failure in response.get("Failed", []):
        message = messages[int(failure["Id"])]
        report.delete_failures.append(
            f"{message.message_id}: {failure.get('Code')} {failure.get('Message', '')}".strip())
    return [messages[int(ok["Id"])] for ok in response.get("Successful", [])]


def _no_retry_client(resilience: Resilience = Resilience()):
    return boto3.session.Session().client("sqs", config=aws.client_config(resilience.sqs_timeout_ms, max_attempts=1))


def _try_move_task(sqs, move_task_sqs, dlq_url, target_url, report: RedriveReport, progress) -> bool:
    """Start an SQS message move task and wait for it; False (with the reason) if SQS refused it."""
    client = move_task_sqs or _no_retry_client()
    source_arn = queue_arn(sqs, dlq_url)
    try:
        handle = client.start_message_move_task(SourceArn=source_arn,
                                                DestinationArn=queue_arn(sqs, target_url))["TaskHandle"]
    except ClientError as error:
        # An error reply means no task started: nothing has moved, so falling back is safe.
        code = error.response.get("Error", {}).get("Code", "?")
        report.fallback_reason = f"StartMessageMoveTask unavailable ({code})"
        return False
    report.method = METHOD_MOVE_TASK
    while True:
        task = _move_task(client, source_arn, handle)
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        to_move = task.get("ApproximateNumberOfMessagesToMove")
        if progress is not None:
            progress(moved, int(to_move) if to_move is not None else None)
        if task.get("Status") != MOVE_TASK_RUNNING:
            break
        time.sleep(MOVE_TASK_POLL_S)
    report.sent = moved
    report.removed_from_dlq += moved  # after any superseded copies deleted first
    if task.get("Status") != "COMPLETED":
        report.send_failures.append(f"move task ended {task.get('Status')}: {task.get('FailureReason', '')}".strip())
    return True


def _move_task(client, source_arn: str, handle: str) -> dict:
    tasks = client.list_message_move_tasks(SourceArn=source_arn, MaxResults=10).get("Results", [])
    # Only a running task carries its handle; the newest task is first.
    for task in tasks:
        if task.get("TaskHandle") == handle:
            return task
    return tasks[0] if tasks else {"Status": "UNKNOWN"}
