"""What a DLQ message is, as the tool shows it (`DlqMessage`), which ones a command acts on
(`Selector`, by age and reason), and the durations people give and read ("90s", "1h30m")."""
from __future__ import annotations

import base64
import dataclasses
import re
from dataclasses import dataclass

from cloudia import dlq_format
from cloudia.jobs import Job, now_ms


class DlqError(Exception):
    """Bad input or an unusable queue, said in words an operator can act on."""


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
