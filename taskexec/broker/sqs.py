"""The router's SQS publisher: AUTOMATED tasks for the serverless executor (serverless/, workers/serverless.py).

Chosen over kombu's SQS transport: the consumer is an AWS Lambda function fed by an SQS event source
mapping, not a Celery worker, so the message is our own typed body (`SqsTaskMessage`: task id and
dispatch token) rather than Celery's protocol wrapped in base64; boto3 needs no pycurl; and Lambda's
`batchItemFailures` need nothing from Celery. Everything else about delivery stays the router's:
retries and delayed attempts are published when due by the dispatcher, a lost message is published
again after the visibility timeout (`republish_overdue`), and a duplicate is refused by the start call.

Credentials and region come from the standard AWS chain (role, `AWS_*` variables); an endpoint
override (`AWS_ENDPOINT_URL_SQS`, as for a local emulator) is honoured by boto3 itself. SQS has no
priorities: the message carries the task's priority, but the queue is first in, first out at best.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from taskexec.contract.schemas import SqsTaskMessage
from taskexec.core.config import Settings
from taskexec.core.constants import Priority


def region_of(queue_url: str) -> str | None:
    """`https://sqs.eu-west-1.amazonaws.com/123/q` -> `eu-west-1` (None for other hosts)."""
    host = urlsplit(queue_url).hostname or ""
    parts = host.split(".")
    return parts[1] if len(parts) >= 4 and parts[0] == "sqs" and parts[-2] == "amazonaws" else None


class SqsPublisher:
    """Sends one message per AUTOMATED task to `TEL_SQS_QUEUE_URL`."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        assert settings.sqs_queue_url
        self.queue_url = settings.sqs_queue_url
        if client is None:
            import boto3
            from botocore.config import Config

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or region_of(self.queue_url)
            client = boto3.client("sqs", region_name=region or "us-east-1",
                                  config=Config(connect_timeout=3, read_timeout=10,
                                                retries={"max_attempts": 3, "mode": "standard"}))
        self.client = client

    def publish(self, task_id: str, token: str, priority: str) -> None:
        body = SqsTaskMessage(task_id=task_id, dispatch_token=token, priority=Priority(priority))
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=body.model_dump_json(by_alias=True))

    def ping(self) -> bool:
        try:
            self.client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
            return True
        except Exception:
            return False
