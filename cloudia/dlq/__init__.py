"""The DLQ tool's library: look at dead-lettered jobs and move them back to the jobs queue.

A job reaches the DLQ in one of two ways: the worker sends a failed job there itself, with the
attributes `FailureReason`, `FailureClass` and `ReceiveCount` (cloudia/dlq_format.py); or SQS moves
it after `maxReceiveCount` (5) receives, when a worker died during its last attempt, and the worker's
DLQ sweep soon replaces it with a copy that says why (worker_image/worker/dead_letters.py).

Rooms: `messages` (a message, the selection, durations), `queues` (counts, leases, looks), `journal`
(what a redrive sent and has not yet deleted), `redrive` (the move). How a move never loses nor
doubles a message, and why it leaves out copies a retry superseded: docs/architecture.md, "The DLQ
tool". The command line is cloudia/dlq_cli.py.
"""
from cloudia.dlq.journal import RedriveJournal, default_journal_path
from cloudia.dlq.messages import DlqError, DlqMessage, Selector, format_duration, parse_duration
from cloudia.dlq.queues import (DEFAULT_LEASE_S, SQS_BATCH_MAX, QueueCounts, find, lease, look, queue_arn,
                                queue_counts, queue_name, release, sqs_client, superseded)
from cloudia.dlq.redrive import (DEFAULT_SETTLE_S, METHOD_DRY_RUN, METHOD_MOVE_TASK, METHOD_RECEIVE_SEND_DELETE,
                                 Progress, RedriveReport, redrive)

__all__ = [
    "DEFAULT_LEASE_S", "DEFAULT_SETTLE_S", "METHOD_DRY_RUN", "METHOD_MOVE_TASK", "METHOD_RECEIVE_SEND_DELETE",
    "SQS_BATCH_MAX", "DlqError", "DlqMessage", "Progress", "QueueCounts", "RedriveJournal", "RedriveReport",
    "Selector", "default_journal_path", "find", "format_duration", "lease", "look", "parse_duration", "queue_arn",
    "queue_counts", "queue_name", "redrive", "release", "sqs_client", "superseded",
]
