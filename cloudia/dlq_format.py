"""The format of a DLQ message: the attributes a dead-lettered job carries, built and read here only.

The worker dead-letters a failed job itself, after telling its user, and its copy says why
(`FailureReason`), the failure's class (`FailureClass`) and how many times the jobs queue handed it
out (`ReceiveCount`; the DLQ's own count grows with every look). A message SQS moved there by itself
carries none of them. A redriven copy carries `redriveId` (its DLQ MessageId) and drops the failure
attributes, which described the last failure. Names are read case-insensitively, as operators who
add messages by hand spell them variously.
"""
from __future__ import annotations

FAILURE_REASON_ATTRIBUTE = "FailureReason"
FAILURE_CLASS_ATTRIBUTE = "FailureClass"
RECEIVE_COUNT_ATTRIBUTE = "ReceiveCount"
REDRIVE_ID_ATTRIBUTE = "redriveId"
# The reason shown for a message SQS moved by itself (it carries no FailureReason).
MAX_RECEIVES_REASON = "max receives exceeded"
# SQS refuses a longer attribute value than it stores; a reason is cut here.
REASON_MAX_CHARS = 1024

_FAILURE_ATTRIBUTES = {a.lower() for a in (FAILURE_REASON_ATTRIBUTE, FAILURE_CLASS_ATTRIBUTE, RECEIVE_COUNT_ATTRIBUTE)}


def failure_attributes(reason: str, failure_class: str, receive_count: int) -> dict:
    """The message attributes of a DLQ copy: why it failed, its class, after how many receives."""
    return {
        FAILURE_REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:REASON_MAX_CHARS]},
        FAILURE_CLASS_ATTRIBUTE: {"DataType": "String", "StringValue": failure_class},
        RECEIVE_COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(receive_count)},
    }


def sendable_attributes(attributes: dict) -> dict:
    """Received attributes carry list fields SQS refuses on send; keep the value and its type."""
    keep = ("DataType", "StringValue", "BinaryValue")
    return {name: {k: v for k, v in value.items() if k in keep} for name, value in attributes.items()}


def redriven_attributes(attributes: dict, dlq_message_id: str) -> dict:
    """The attributes of a copy sent back to the jobs queue: no failure attributes, a `redriveId`."""
    kept = {k: v for k, v in attributes.items() if k.lower() not in _FAILURE_ATTRIBUTES}
    kept[REDRIVE_ID_ATTRIBUTE] = {"DataType": "String", "StringValue": dlq_message_id}
    return sendable_attributes(kept)


def attribute(attributes: dict, name: str) -> str | None:
    """The string value of attribute `name` (any case), or None."""
    for key, value in attributes.items():
        if key.lower() == name.lower() and value.get("StringValue"):
            return value["StringValue"]
    return None


def failure_class(attributes: dict) -> str | None:
    """None for a message SQS moved by itself (nobody has told its user yet)."""
    return attribute(attributes, FAILURE_CLASS_ATTRIBUTE)


def failure_reason(attributes: dict) -> str:
    return attribute(attributes, FAILURE_REASON_ATTRIBUTE) or MAX_RECEIVES_REASON


def recorded_receive_count(attributes: dict) -> int | None:
    value = attribute(attributes, RECEIVE_COUNT_ATTRIBUTE)
    return int(value) if value is not None and value.isdigit() else None
