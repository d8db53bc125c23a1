"""The jobs queue and its dead-letter queue."""
from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.config import AppConfig

DLQ_RETENTION_DAYS = 14  # SQS's maximum: the longest time a person has to inspect and redrive


class JobsQueue(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig,
                 removal_policy: RemovalPolicy, key: kms.IKey | None = None) -> None:
        super().__init__(scope, construct_id)
        # prod: the data key (keys.py). FinOps, dev: SQS-managed SSE, free and without a key to pay for.
        encryption = dict(encryption=sqs.QueueEncryption.KMS, encryption_master_key=key) if key else \
            dict(encryption=sqs.QueueEncryption.SQS_MANAGED)
        # The jobs queue has a fixed name only so the DLQ's redrive allow policy can name it: a
        # reference to its ARN would make the two queues depend on each other.
        jobs_queue_name = f"{Stack.of(self).stack_name}-jobs"
        self.dlq = sqs.Queue(
            self, "DeadLetterQueue",
            retention_period=Duration.days(DLQ_RETENTION_DAYS),
            **encryption,
            enforce_ssl=True,
            # Only the jobs queue may use this DLQ, so nothing else's failures mix with ours.
            redrive_allow_policy=sqs.RedriveAllowPolicy(
                redrive_permission=sqs.RedrivePermission.BY_QUEUE,
                source_queues=[sqs.Queue.from_queue_arn(self, "JobsQueueRef", Stack.of(self).format_arn(
                    service="sqs", resource=jobs_queue_name))]),
            removal_policy=removal_policy,
        )
        self.queue = sqs.Queue(
            self, "Queue",
            queue_name=jobs_queue_name,
            # Longer than the worker's longest job (config.jobs_visibility_timeout_s): a message a
            # healthy worker holds never reappears; the worker shortens it for backoff.
            visibility_timeout=Duration.seconds(config.jobs_visibility_timeout_s),
            retention_period=Duration.days(4),
            **encryption,
            enforce_ssl=True,
            # After max_receives (5) receives without a delete, SQS moves the job to the DLQ.
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=config.resilience.max_receives),
            removal_policy=removal_policy,
        )
