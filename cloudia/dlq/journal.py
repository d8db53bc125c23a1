"""The redrive's journal: the DLQ messages a run sent to the jobs queue and has not yet deleted from
the DLQ, fsync'ed before each delete, so an interrupted run's re-run only deletes what was sent."""
from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterable

from cloudia.dlq.messages import DlqError
from cloudia.dlq.queues import queue_name


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
