"""The process sandbox of the serverless executor (sandbox/process.py), attacked like the container one.

Real child processes with real rlimits. These tests run as root (as CI does), so the runner takes its
isolated path: a dedicated uid and an empty network namespace. As Lambda's non-root user it has
neither (the function's micro-VM is the boundary there, docs/sandbox.md).
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from sandbox.process import ProcessRunner
from sandbox.spec import Limits, RunResult, RunSpec

CANARY = "canary-" + os.urandom(6).hex()


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> ProcessRunner:
    assert os.geteuid() == 0, "run as root (as CI does): the isolated path needs it"
    base = tmp_path_factory.mktemp("process-sandbox")
    base.chmod(0o755)  # the sandbox uid must reach its working directory below
    for parent in base.parents:  # pytest's base directory is private to root
        if str(parent).startswith("/tmp/pytest-of-"):
            parent.chmod(0o755)
    os.environ["TEL_TEST_PROCESS_CANARY"] = CANARY  # in our environment, never in the code's
    return ProcessRunner(workdir_base=str(base), run_as=random.randint(3_000_000, 3_900_000))


def run(runner: ProcessRunner, code: str, runtime: str = "python", **limits: float) -> RunResult:
    spec = RunSpec(task_id="t1", attempt=1, runtime=runtime, code=code, input={"x": 21},
                   env={"TASK_ID": "t1", "MY_VAR": "mine"}, limits=Limits(**{"timeout_s": 10.0, **limits}))
    return runner.run(spec)


def uid_processes(uid: int) -> list[str]:
    """Live processes of `uid`. A zombie (state Z) is dead already: it waits for whoever adopted it (the
    machine's init) to collect its exit status, and holds no memory, CPU or files meanwhile."""
    out = subprocess.run(["ps", "-eo", "uid=,pid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[0] == str(uid) and not line.split()[2].startswith("Z")]


def test_result_environment_and_working_directory(runner: ProcessRunner) -> None:
    result = run(runner, "def main(i):\n    import os\n    open('scratch', 'w').write('x')\n"
                         "    return {'y': i['x'] * 2, 'env': dict(os.environ), 'uid': os.getuid(),\n"
                         "            'cwd': os.getcwd()}\n")
    assert result.ok and result.output["y"] == 42, result
    env = result.output["env"]
    assert set(env) == {"PATH", "HOME", "LANG", "TMPDIR", "TASK_ID", "MY_VAR"}
    assert result.output["uid"] == runner.uid != 0
    cwd = Path(result.output["cwd"])
    assert env["HOME"] == str(cwd) and cwd.parent == runner.base
    assert not cwd.exists() and not list(runner.base.iterdir())  # wiped after the attempt
    assert result.environment["isolation"] == {"kind": "process", "uid": runner.uid, "separateUser": True,
                                               "networkNamespace": True}


def test_the_host_process_is_out_of_reach(runner: ProcessRunner) -> None:
    me = os.getpid()
    code = (f"import os\nppid = os.getppid()\nfor pid in (ppid, {me}):\n"
            "    try:\n        print(pid, open(f'/proc/{pid}/environ').read())\n"
            "    except OSError as e:\n        print(pid, 'denied', e.errno)\n"
            f"try:\n    os.kill({me}, 0)\n    print('signal ok')\nexcept OSError as e:\n    print('signal', e.errno)\n")
    result = run(runner, code)
    assert result.ok, result
    assert CANARY not in result.stdout_tail and "TEL_TEST_PROCESS_CANARY" not in result.stdout_tail
    assert f"{os.getpid()} denied 13" in result.stdout_tail and "signal 1" in result.stdout_tail  # EACCES, EPERM


def test_no_network(runner: ProcessRunner) -> None:
    code = ("import socket\nfor target in [('127.0.0.1', 6379), ('127.0.0.1', 55432)]:\n"
            "    s = socket.socket()\n    s.settimeout(2)\n    try:\n        s.connect(target)\n        print('open')\n"
            "    except OSError as e:\n        print('refused', e.errno)\n")
    result = run(runner, code)
    assert result.ok and "open" not in result.stdout_tail and result.stdout_tail.count("refused 101") == 2, result


@pytest.mark.parametrize(("code", "limits", "error"), [
    ("def main(i):\n    return len(bytearray(600 * 1024 * 1024))\n", {}, "MEMORY_LIMIT_EXCEEDED"),
    ("while True:\n    pass\n", {"timeout_s": 2.0}, "TIME_LIMIT_EXCEEDED"),
    ("import os\nwhile True:\n    os.fork()\n", {"timeout_s": 5.0}, "NON_ZERO_EXIT"),
    ("open('big', 'wb').write(b'x' * (20 * 1024 * 1024))\n", {"tmp_bytes": 8 * 1024 * 1024}, "NON_ZERO_EXIT"),
    ("import sys\nsys.stdout.write('x' * 300000)\n", {"output_bytes": 100_000}, "OUTPUT_LIMIT_EXCEEDED"),
], ids=["memory", "cpu-time", "fork-bomb", "file-size", "output"])
def test_limits(runner: ProcessRunner, code: str, limits: dict[str, float], error: str) -> None:
    result = run(runner, code, **limits)
    assert not result.ok and result.error_code == error, result
    if "fork" in code:
        assert "Resource temporarily unavailable" in result.stderr_tail  # RLIMIT_NPROC, not the wall clock
    if "big" in code:
        assert "File too large" in result.stderr_tail  # RLIMIT_FSIZE
    assert not uid_processes(runner.uid)


def test_nothing_the_code_started_survives_it(runner: ProcessRunner) -> None:
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(600)\n    os._exit(0)\nprint('daemon started')\n")
    result = run(runner, code)
    assert result.ok and "daemon started" in result.stdout_tail, result
    assert not uid_processes(runner.uid)
    shell = run(runner, "sleep 600 &\nnohup sleep 600 >/dev/null 2>&1 &\necho $TASK_ID; id -u", runtime="shell")
    assert shell.ok and shell.stdout_tail.split() == ["t1", str(runner.uid)], shell
    assert not uid_processes(runner.uid)
