"""The serverless automated executor end to end: router -> SQS -> Lambda handler -> router.

AWS is a third party we cannot run here. SQS and Secrets Manager are moto in server mode (a real HTTP
emulator of their APIs, from PyPI), started by this test on 127.0.0.1. Lambda's part is played by the
test: it receives a batch from the queue, invokes `workers.serverless.handler` in-process with the
SQS event shape, and then does what the event source mapping does with the response (deletes the
records not in `batchItemFailures`). Two liberties: a failed record is made visible again at once
(ChangeMessageVisibility 0) instead of after the 300 s visibility timeout, and `FakeContext`, the
stand-in for Lambda's context object, returns a scripted remaining time instead of a clock.

The router is a real process publishing to SQS (TEL_SQS_QUEUE_URL); the tasks run in the process
sandbox; the handler's environment holds no database credentials, and its service token comes from
the Secrets Manager emulator.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.conftest import auth
from tests.support import Proc, Stack, free_port, wait_for

pytestmark = pytest.mark.slow
CODE = "def main(input):\n    print('doubling', input['x'])\n    return {'double': input['x'] * 2}\n"


class FakeContext:
    """Stand-in for the Lambda context (a third party): the remaining time comes from a script, one value
    per call (the handler asks once per record), the last value repeating."""

    def __init__(self, *remaining_ms: int) -> None:
        self.script = list(remaining_ms)

    def get_remaining_time_in_millis(self) -> int:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
    server = Proc([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)], {
        "PATH": "/usr/bin:/bin"}, tmp_path / "moto.log")

    def up() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, 60, what="moto server")
        yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    finally:
        server.stop()


def to_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """SQS messages as Lambda's SQS event delivers them."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1"} for m in messages]}


def test_router_sqs_lambda_handler_round_trip_with_partial_batch_failures(
        env: dict[str, str], moto: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    name = "tel-" + uuid.uuid4().hex[:8]
    dlq = sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=name, Attributes={  # serverless/template.yaml's settings
        "VisibilityTimeout": "300", "MessageRetentionPeriod": "86400",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    stack = Stack({**env, **moto, "TEL_SQS_QUEUE_URL": queue}, tmp_path)
    stack.start_router()
    try:
        secrets = boto3.client("secretsmanager", endpoint_url=moto["AWS_ENDPOINT_URL"], region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        arn = secrets.create_secret(Name=name + "-service-token", SecretString=stack.service_key)["ARN"]
        # The function's environment: the router URL, the secret's ARN, AWS; nothing of the database.
        for key in [k for k in os.environ if k.startswith(("TEL_", "DATABASE_URL"))]:
            monkeypatch.delenv(key)
        for key, value in {**moto, "TASK_ROUTER_URL": stack.url, "TEL_SERVICE_TOKEN_SECRET_ARN": arn}.items():
            monkeypatch.setenv(key, value)
        from workers import serverless

        serverless.reset()  # a cold start
        run_scenario(stack, sqs, queue, queue_arn, dlq, serverless.handler)
    finally:
        from workers import serverless

        serverless.reset()
        stack.stop()


def run_scenario(stack: Stack, sqs: Any, queue: str, queue_arn: str, dlq: str, handler: Any) -> None:
    admin = auth("admin", "admin")
    api = stack.url + "/api/v1"
    definition = {"id": "double", "name": "Double", "type": "AUTOMATED", "inputSchema": {"type": "object"},
                  "executionConfig": {"runtime": "python", "code": CODE,
                                      "resourceRequirements": {"memory": "128Mi", "timeoutSeconds": 20}}}
    assert requests.post(api + "/tasks/definitions", json=definition, headers=admin, timeout=10).status_code == 201

    def submit(x: int) -> str:
        r = requests.post(api + "/tasks", json={"taskDefinitionId": "double", "input": {"x": x}}, headers=admin,
                          timeout=10)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def task(task_id: str) -> dict[str, Any]:
        return requests.get(f"{api}/tasks/{task_id}", headers=admin, timeout=10).json()  # type: ignore[no-any-return]

    def receive(count: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        for _ in range(30):  # bounded: each call waits at most 1 s
            got += sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       AttributeNames=["All"]).get("Messages", [])
            if len(got) >= count:
                break
        assert len(got) == count, got
        return got

    def settle(messages: list[dict[str, Any]], response: dict[str, Any]) -> set[str]:
        """The event source mapping: delete what succeeded; (our shortcut) re-expose what failed now."""
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] in failed:
                sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
            else:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        return failed

    # 1. Three tasks published by the router, plus one message that is not a task: the batch succeeds
    #    but for that one record.
    first = [submit(x) for x in (1, 2, 3)]
    bad = sqs.send_message(QueueUrl=queue, MessageBody='{"taskId": "not-a-task"')["MessageId"]
    batch = receive(4)
    bodies = {json.loads(m["Body"])["taskId"] for m in batch if m["MessageId"] != bad}
    assert bodies == set(first)  # the router's own messages: task id and dispatch token
    assert settle(batch, handler(to_event(batch, queue_arn), FakeContext(60_000))) == {bad}
    for task_id, x in zip(first, (1, 2, 3), strict=True):
        detail = task(task_id)
        assert detail["status"] == "COMPLETED", detail
        assert detail["output"] == {"double": 2 * x}
        env = detail["executionMetadata"]["executionEnvironment"]
        assert env["isolation"]["kind"] == "process"
    logs = requests.get(f"{api}/tasks/{first[0]}/logs", headers=admin, timeout=10).json()
    assert "doubling 1" in logs["stdout"]

    # 2. Two more tasks; the function's time runs out after the first record: the rest of the batch
    #    (the second task, and the bad message's second delivery) goes back to SQS, the task untouched.
    late = [submit(x) for x in (10, 20)]
    batch = receive(3)
    batch.sort(key=lambda m: m["MessageId"] == bad)  # the bad one last
    order = [json.loads(m["Body"])["taskId"] for m in batch[:2]]
    failed = settle(batch, handler(to_event(batch, queue_arn), FakeContext(60_000, 2_000)))
    retried = order[1]
    assert failed == {batch[1]["MessageId"], bad}
    assert task(order[0])["status"] == "COMPLETED"
    waiting = task(retried)
    assert waiting["status"] == "PENDING" and waiting["retryCount"] == 0  # never started: nothing to undo

    # 3. The next delivery: the task runs; the bad message, past maxReceiveCount, is in the dead-letter queue.
    batch = receive(1)
    assert json.loads(batch[0]["Body"])["taskId"] == retried
    assert settle(batch, handler(to_event(batch, queue_arn), FakeContext(60_000))) == set()
    done = task(retried)
    assert done["status"] == "COMPLETED" and done["output"] == {"double": 2 * (10 if retried == late[0] else 20)}
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert [m["MessageId"] for m in dead] == [bad]
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    wait_for(lambda: all(task(t)["status"] == "COMPLETED" for t in first + late), 10, what="all tasks completed")
