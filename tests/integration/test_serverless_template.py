"""serverless/template.yaml: `cfn-lint` (with the SAM transform) accepts it and catches a mistake in it, and
it carries the deployment document's settings with least-privilege permissions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT

TEMPLATE = ROOT / "serverless" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short forms (!Ref, !GetAtt, ...) as {"Ref": ...} / {"Fn::GetAtt": ...}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    here = Path(sys.executable).with_name("cfn-lint")
    exe = str(here) if here.exists() else shutil.which("cfn-lint")
    assert exe, "cfn-lint missing: run make setup (requirements-dev.lock)"
    return subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def test_cfn_lint_accepts_the_template_and_rejects_a_broken_one(tmp_path: Path) -> None:
    out = cfn_lint(TEMPLATE)
    assert out.returncode == 0, out.stdout + out.stderr
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("Handler: workers", "Handlr: workers")  # a typo
                      .replace("VisibilityTimeout: 300", "VisibilityTimeout: 300000"))  # above SQS's 12 h
    out = cfn_lint(broken)
    assert out.returncode != 0 and "'Handlr' was unexpected" in out.stdout and "43200" in out.stdout, out.stdout


def test_the_seed_settings(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    function = resources["AutomatedTaskExecutorFunction"]["Properties"]
    assert function["Runtime"].startswith("python3.") and function["Handler"] == "workers.serverless.handler"
    assert (function["MemorySize"], function["Timeout"]) == (512, 300)
    assert function["Environment"]["Variables"]["TASK_ROUTER_URL"] == {"Ref": "TaskRouterUrl"}
    event = function["Events"]["TaskExecutionRequest"]
    assert event["Type"] == "SQS" and event["Properties"]["BatchSize"] == 10
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["TaskExecutionQueue", "Arn"]}
    queue = resources["TaskExecutionQueue"]["Properties"]
    assert (queue["VisibilityTimeout"], queue["MessageRetentionPeriod"]) == (300, 86400)
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["TaskExecutionDeadLetterQueue", "Arn"]}
    assert resources["TaskExecutionDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    # the task's attempt fits in the function's timeout, with room to report the result
    timeout_ms = int(function["Environment"]["Variables"]["EXECUTION_TIMEOUT"])
    assert timeout_ms / 1000 + 5 <= function["Timeout"]
    assert "DATABASE_URL" not in yaml.safe_dump(template)


def test_least_privilege(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    function = resources["AutomatedTaskExecutorFunction"]["Properties"]
    assert function["Role"] == {"Fn::GetAtt": ["ExecutorRole", "Arn"]}  # not SAM's generated role
    assert "Policies" not in function
    role = resources["ExecutorRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    statements += resources["RouterPublishPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert statement["Effect"] == "Allow"
        assert all("*" not in a for a in actions), statement  # named actions only
        assert statement["Resource"] != "*" and "*" not in str(statement["Resource"]), statement
    named = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert named == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                       "sqs:ChangeMessageVisibility", "secretsmanager:GetSecretValue", "logs:CreateLogStream",
                       "logs:PutLogEvents", "sqs:SendMessage"}
