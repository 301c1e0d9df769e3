"""`taskexec beat` sends the periodic sweeps and the pools carry them out through the router."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import define, python_def, submit
from tests.support import Proc, Receiver, Stack, taskexec, wait_for

pytestmark = [pytest.mark.slow]


@pytest.fixture
def quiet_router(env: dict[str, str], receiver: Receiver, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A router without its own dispatcher thread: only the scheduler's sweeps deliver events."""
    s = Stack({**env, "WORKFLOW_ORCHESTRATOR_URL": receiver.url, "TEL_OUTBOX_THREAD": "false",
               "TEL_STATE_DIR": str(tmp_path)}, tmp_path)
    s.start_router()
    yield s
    s.stop()


def test_beat_drives_outbox_delivery(quiet_router: Stack, receiver: Receiver, tmp_path: Path) -> None:
    define(quiet_router, python_def("swept", "def main(input):\n    return 1\n"))
    task_id = submit(quiet_router, "swept").json()["id"]
    quiet_router.start_worker("manual", concurrency=1)
    beat = Proc(taskexec("beat"), quiet_router.worker_env(), tmp_path / "beat.log")
    quiet_router.procs["beat"] = beat
    wait_for(lambda: "task.instance.created" in receiver.events_for(task_id), 30, what="event delivered by sweep")
