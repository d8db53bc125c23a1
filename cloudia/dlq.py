"""Dead-letter queue redrive: list and inspect DLQ messages, and move them back to the jobs queue.

A job reaches the DLQ in one of two ways:
  * the worker sends a permanently failed job there itself, with the message attribute
    `FailureReason` saying why (and `FailureClass`, and `ReceiveCount` from the jobs queue; the
    names are matched case-insensitively);
  * SQS moves it there after `maxReceiveCount` (5) receives, when a worker died during the job's
    last attempt. The worker's DLQ sweep soon replaces it with a copy that says why (`max_receives`,
    worker_image/worker/dead_letters.py); until then it is shown as "max receives exceeded" with
    its `ApproximateReceiveCount`.

SQS has no "peek": looking at a message means receiving it. Every look here leases the messages
(receive with a visibility timeout) and releases them at the end (visibility 0), and every look adds
one to a message's receive count, so the count shown is the one *before* this look.

Moving messages back
--------------------
* **Move task (AWS).** Moving everything, with no filter, uses SQS `StartMessageMoveTask` and polls
  `ListMessageMoveTasks` for progress; SQS itself then guarantees that nothing is lost or doubled.
  Where the operation does not exist (moto 5.2.5 answers HTTP 500) or is refused, the error comes
  back before anything has moved, and the tool falls back to the path below.
* **Receive / send / delete (everywhere).** For each leased batch:
    1. a message whose DLQ MessageId is already in the journal was sent by an earlier, interrupted
       run: it is only deleted, never sent again;
    2. the rest are sent to the jobs queue with the same body and message attributes plus
       `redriveId` = the DLQ MessageId (a deterministic marker: the same DLQ message always carries
       the same id, so a consumer or an operator can recognise a copy). `FailureReason` and
       `FailureClass` are dropped: they described the last failure, and a new one records its own. A new message on
       the jobs queue starts with a receive count of 0;
    3. the ids SQS accepted are appended to the journal and fsync'ed;
    4. only then are they deleted from the DLQ, and the deletions are appended to the journal.
  A run moves only messages sent before it started, so a failure that arrives meanwhile waits for
  the next run. The journal is a small append-only file per (DLQ, target) pair; it is compacted when a run starts
  (ids already deleted are dropped) and guarded by a file lock, so two runs on one machine cannot
  interleave. An interruption anywhere leaves each message in exactly one of these states:
    - not yet sent: it is still in the DLQ (visible again when its lease ends) and a re-run moves it;
    - sent and journaled, not deleted: a re-run finds it in the journal and only deletes it;
    - sent and deleted: it is gone from the DLQ and never seen again.
  The one window the journal cannot close is a kill between SendMessage's reply and the journal's
  fsync (microseconds of local I/O). A re-run then sends that message again: the tool prefers a
  possible duplicate to a possible loss, and the copy carries the same `redriveId` and job id, so
  the worker, which skips jobs the jobs table already has as answered, does not answer it twice.

Copies a retry superseded
-------------------------
A person can retry their failed job from the page (the `retry` action): the job goes back to the
jobs queue, its row counts the retry (`retries`) and the message carries the count (`Job.retry`, in
the body, which a DLQ copy keeps). A DLQ copy whose count is below its job's row is of an attempt the
retry replaced: redriving it would run the job a second time. Given the jobs table (`jobs`; the CLI
passes it when JOBS_TABLE is set), a redrive leaves such copies out and deletes them from the DLQ
(`RedriveReport.superseded`; a dry run only lists them), before a move task too. The count, not a
time, decides: the copy of the retried attempt's own failure carries the new count and is redriven.

Counts: the DLQ's size (visible + in flight + delayed) is read before and after a run; after must
equal before minus what this run deleted from the DLQ. SQS counts are approximate and settle within
seconds on AWS, so the check re-reads them for a bounded time before calling a mismatch (a mismatch
also happens when something else writes to the DLQ meanwhile: the worker, or a second operator).
"""
from __future__ import annotations

import base64
import dataclasses
import fcntl
import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import boto3
from botocore.exceptions import ClientError

from cloudia import aws
from cloudia import dlq_format
from cloudia.jobs import RETRIES_ATTRIBUTE, Job, now_ms
from cloudia.settings import Resilience

# SQS returns and accepts at most 10 messages per Receive/SendBatch/DeleteBatch call.
SQS_BATCH_MAX = 10
# Long poll of each receive: > 0 makes SQS ask every server, so an empty answer means empty.
RECEIVE_WAIT_S = 1
# How long a look or a move holds the messages it received; must outlast sending and deleting a
# batch, and a crashed run's messages are back in the DLQ after it.
DEFAULT_LEASE_S = 120
# How long to re-read SQS's approximate counts before calling them in disagreement.
DEFAULT_SETTLE_S = 30.0
COUNT_POLL_S = 1.0
MOVE_TASK_POLL_S = 2.0
MOVE_TASK_RUNNING = "RUNNING"

Progress = Callable[[int, "int | None"], None]


class DlqError(Exception):
    """Bad input or an unusable queue, said in words an operator can act on."""


# -- durations ---------------------------------------------------------------------------------

_DURATION_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h', '1d', '1h30m' -> seconds. A unit is required: '10' is ambiguous."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("empty duration")
    position, total_s = 0, 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != position:
            break
        total_s += float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
        position = match.end()
    if position != len(compact):
        raise ValueError(f"bad duration {text!r}: use a number and a unit (ms, s, m, h, d, w), e.g. 90s, 2h, 1h30m")
    return total_s


def format_duration(seconds: float) -> str:
    """Seconds -> '2h5m', '40s', '250ms': the two largest units, for people."""
    if 0 < seconds < 1:
        return f"{round(seconds * 1000)}ms"
    remaining = max(0, round(seconds))
    parts: list[str] = []
    for unit, size_s in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size_s or (unit == "s" and not parts):
            whole, remaining = divmod(remaining, size_s)
            parts.append(f"{whole}{unit}")
    return "".join(parts[:2])


# -- messages ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DlqMessage:
    message_id: str
    receipt_handle: str
    body: str
    message_attributes: dict
    attributes: dict

    @property
    def sent_at_ms(self) -> int:
        return int(self.attributes.get("SentTimestamp", "0"))

    def age_s(self, at_ms: int | None = None) -> float:
        return ((at_ms if at_ms is not None else now_ms()) - self.sent_at_ms) / 1000

    @property
    def receive_count(self) -> int:
        """Receives from the jobs queue, as the worker recorded them; else (a message SQS moved) the
        receives before this look (each look is a receive too)."""
        recorded = dlq_format.recorded_receive_count(self.message_attributes)
        if recorded is not None:
            return recorded
        return max(0, int(self.attributes.get("ApproximateReceiveCount", "1")) - 1)

    @property
    def failure_reason(self) -> str:
        return dlq_format.failure_reason(self.message_attributes)

    @property
    def job(self) -> Job | None:
        try:
            return Job.from_json(self.body)
        except (ValueError, TypeError):
            return None

    def as_dict(self, at_ms: int | None = None) -> dict:
        job = self.job
        return {
            "messageId": self.message_id,
            "jobId": job.job_id if job else None,
            "ageS": round(self.age_s(at_ms), 3),
            "sentAtMs": self.sent_at_ms,
            "receiveCount": self.receive_count,
            "reason": self.failure_reason,
            "job": dataclasses.asdict(job) if job else None,
            "body": None if job else self.body,
            "messageAttributes": {k: _attribute_value(v) for k, v in self.message_attributes.items()},
        }


def _attribute_value(value: dict) -> str:
    if "StringValue" in value:
        return value["StringValue"]
    return "base64:" + base64.b64encode(value.get("BinaryValue", b"")).decode()


@dataclass(frozen=True)
class Selector:
    """Which DLQ messages a command acts on; an empty selector means all of them."""

    older_than_s: float | None = None
    newer_than_s: float | None = None
    reasons: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("older_than_s", "newer_than_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise DlqError(f"{name} must not be negative")
        if self.older_than_s is not None and self.newer_than_s is not None and self.older_than_s >= self.newer_than_s:
            raise DlqError(
                f"--older-than {format_duration(self.older_than_s)} and --newer-than "
                f"{format_duration(self.newer_than_s)} select nothing: older-than must be the smaller"
            )

    @property
    def selects_everything(self) -> bool:
        return self.older_than_s is None and self.newer_than_s is None and not self.reasons

    def matches(self, message: DlqMessage, at_ms: int) -> bool:
        age_s = message.age_s(at_ms)
        if self.older_than_s is not None and age_s < self.older_than_s:
            return False
        if self.newer_than_s is not None and age_s >= self.newer_than_s:
            return False
        if self.reasons:
            reason = message.failure_reason.lower()
            return any(wanted.lower() in reason for wanted in self.reasons)
        return True

    def describe(self) -> str:
        parts = []
        if self.older_than_s is not None:
            parts.append(f"older than {format_duration(self.older_than_s)}")
        if self.newer_than_s is not None:
            parts.append(f"newer than {format_duration(self.newer_than_s)}")
        if self.reasons:
            parts.append("reason contains " + " or ".join(repr(r) for r in self.reasons))
        return ", ".join(parts) or "all"


# -- queues ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueCounts:
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


def sqs_client(resilience: Resilience = Resilience()):
    return aws.sqs(resilience)


def queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _queue_attributes(sqs, url: str, names: list[str]) -> dict:
    if not url:
        raise DlqError("no queue URL given")
    try:
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if "NonExistentQueue" in code or "QueueDoesNotExist" in code:
            raise DlqError(f"queue does not exist: {url}") from error
        raise DlqError(f"cannot read queue {url}: {error}") from error
    except ValueError as error:  # botocore refuses a URL it cannot parse
        raise DlqError(f"not a queue URL: {url} ({error})") from error


def queue_counts(sqs, url: str) -> QueueCounts:
    attributes = _queue_attributes(sqs, url, [
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed",
    ])
    return QueueCounts(
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


def queue_arn(sqs, url: str) -> str:
    return _queue_attributes(sqs, url, ["QueueArn"])["QueueArn"]


def lease(sqs, dlq_url: str, lease_s: int = DEFAULT_LEASE_S, limit: int | None = None) -> Iterator[list[DlqMessage]]:
    """Receive the DLQ's messages in batches, each message once, until the queue has no new one.

    The caller owns the leases: it deletes what it moved and releases the rest (`release`).
    """
    seen: set[str] = set()
    while limit is None or len(seen) < limit:
        wanted = SQS_BATCH_MAX if limit is None else min(SQS_BATCH_MAX, limit - len(seen))
        response = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=wanted,
            VisibilityTimeout=lease_s,
            WaitTimeSeconds=RECEIVE_WAIT_S,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        batch = [
            DlqMessage(m["MessageId"], m["ReceiptHandle"], m["Body"], m.get("MessageAttributes", {}),
                       m.get("Attributes", {}))
            for m in response.get("Messages", [])
            if m["MessageId"] not in seen
        ]
        if not batch:
            return
        seen.update(m.message_id for m in batch)
        yield batch


def release(sqs, dlq_url: str, messages: Iterable[DlqMessage]) -> None:
    """Make leased messages visible again at once."""
    messages = list(messages)
    for start in range(0, len(messages), SQS_BATCH_MAX):
        chunk = messages[start:start + SQS_BATCH_MAX]
        sqs.change_message_visibility_batch(
            QueueUrl=dlq_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                     for i, m in enumerate(chunk)],
        )


def look(sqs, dlq_url: str, selector: Selector = Selector(), limit: int | None = None,
         lease_s: int = DEFAULT_LEASE_S) -> list[DlqMessage]:
    """The DLQ's messages that `selector` matches, oldest first; all are released before returning."""
    queue_counts(sqs, dlq_url)  # a clear error for an unknown queue before the first receive
    held: list[DlqMessage] = []
    try:
        for batch in lease(sqs, dlq_url, lease_s, limit):
            held.extend(batch)
    finally:
        release(sqs, dlq_url, held)
    at_ms = now_ms()
    return sorted((m for m in held if selector.matches(m, at_ms)), key=lambda m: m.sent_at_ms)


def find(sqs, dlq_url: str, message_or_job_id: str, lease_s: int = DEFAULT_LEASE_S) -> DlqMessage | None:
    """The DLQ message with this SQS MessageId or this job id."""
    for message in look(sqs, dlq_url, lease_s=lease_s):
        job = message.job
        if message.message_id == message_or_job_id or (job and job.job_id == message_or_job_id):
            return message
    return None


def superseded(message: DlqMessage, jobs) -> bool:
    """Whether a retry of its job replaced this copy: its retry count is below the job's row's.
    `jobs` reads a job's row (`JobStore.get`); None knows nothing, so nothing is superseded."""
    job = message.job
    if jobs is None or job is None:
        return False
    record = jobs.get(job.job_id)
    return record is not None and int(record.get(RETRIES_ATTRIBUTE) or 0) > job.retry


# -- the journal -------------------------------------------------------------------------------

def default_journal_path(dlq_url: str, target_url: str) -> Path:
    state_home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(f"{dlq_url}\n{target_url}".encode()).hexdigest()[:12]
    return state_home / "cloudia" / "dlq-redrive" / f"{queue_name(dlq_url)}-{digest}.journal"


class RedriveJournal:
    """DLQ MessageIds already sent to the target and not yet known deleted from the DLQ.

    Lines are `sent <id>` (fsync'ed before the DLQ delete) and `deleted <id>` (not fsync'ed: losing
    one only keeps a gone id pending, and a gone message is never received again).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise DlqError(f"another redrive holds {self.path}; wait for it to finish") from None
        self.pending = self._load()
        self._compact()
        self._file = open(self.path, "a", encoding="utf-8")

    def _load(self) -> set[str]:
        pending: set[str] = set()
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                state, _, message_id = line.partition(" ")
                if state == "sent" and message_id:
                    pending.add(message_id)
                elif state == "deleted":
                    pending.discard(message_id)
        return pending

    def _compact(self) -> None:
        staging = self.path.with_name(self.path.name + ".tmp")
        with open(staging, "w", encoding="utf-8") as out:
            out.writelines(f"sent {message_id}\n" for message_id in sorted(self.pending))
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def record_sent(self, message_ids: Iterable[str]) -> None:
        message_ids = list(message_ids)
        self._file.writelines(f"sent {message_id}\n" for message_id in message_ids)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.pending.update(message_ids)

    def record_deleted(self, message_ids: Iterable[str]) -> None:
        message_ids = list(message_ids)
        self._file.writelines(f"deleted {message_id}\n" for message_id in message_ids)
        self._file.flush()
        self.pending.difference_update(message_ids)

    def close(self) -> None:
        self._file.close()
        self._lock.close()

    def __enter__(self) -> "RedriveJournal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- redrive -----------------------------------------------------------------------------------

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
    # Copies a retry of their job replaced (see "Copies a retry superseded"): never sent; deleted
    # from the DLQ by an applied run (counted in `removed_from_dlq`), only listed by a dry run.
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


if __name__ == "__main__":
    import sys

    from cloudia.dlq_cli import main

    sys.exit(main())
