"""The sweep of the DLQ that tells users about jobs SQS dead-lettered by itself.

The worker moves a failed job to the DLQ itself, after telling its user, and the copy carries
`FailureClass`. SQS moves a message there on its own only when its last receive was lost: a worker
died (SIGKILL, OOM, lost host) during the job's last attempt. Nobody has told that user yet, so every
`dlq_sweep_s` a worker looks through the DLQ and settles each message without `FailureClass`
(`JobProcessor.settle_dead_letter`); the others are let go at once. Several workers may sweep at
once: each sees other messages (a look leases them), and a job already failed is not told twice.
"""
from __future__ import annotations

import asyncio

from cloudia.dlq_format import failure_class
from worker.processor import JobProcessor
from worker.telemetry import logger

# A look leases a batch for this long; the sweep lets go of every message it does not settle.
LEASE_S = 30
# At most this many batches of 10 per sweep (a larger DLQ is swept over several).
MAX_BATCHES = 100


async def sweep(processor: JobProcessor, sqs, dlq_url: str) -> int:
    """One pass over the DLQ; how many messages were settled."""
    settled, seen = 0, []
    try:
        for _ in range(MAX_BATCHES):
            batch = (await processor.io(
                sqs.receive_message, QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                VisibilityTimeout=LEASE_S, MessageAttributeNames=["All"],
                AttributeNames=["ApproximateReceiveCount"])).get("Messages", [])
            if not batch:
                break
            for message in batch:
                if failure_class(message.get("MessageAttributes", {})) is not None:
                    seen.append(message)
                else:
                    await processor.settle_dead_letter(message)
                    settled += 1
    finally:
        for message in seen:
            try:
                await processor.io(sqs.change_message_visibility, QueueUrl=dlq_url,
                                   ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
            except Exception:  # noqa: BLE001 - visible again when its lease ends anyway
                pass
    return settled


async def sweep_periodically(processor: JobProcessor, sqs, dlq_url: str, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await sweep(processor, sqs, dlq_url)
        except Exception:  # noqa: BLE001 - AWS trouble: the next sweep tries again
            logger.exception("sweeping the DLQ failed")
