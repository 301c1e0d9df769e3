"""Integration tests of sandbox/ against a real Docker engine (no mocks)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import docker
import pytest

from sandbox import DockerRunner, Limits, RunResult, RunSpec, SandboxUnavailable, build_images
from sandbox import containers as c
from sandbox import reaper as reaper_mod
from tests.support import wait_for

pytestmark = pytest.mark.docker


@pytest.fixture(scope="session")
def images(docker_client: docker.DockerClient) -> dict[str, str]:
    return build_images(log=lambda _msg: None)  # builds only when missing


@pytest.fixture(scope="session")
def runner(images: dict[str, str]) -> Iterator[DockerRunner]:
    r = DockerRunner(images, pool_size=0)
    yield r
    r.close()


TEST_LABEL = "taskexec.test"


def managed(client: docker.DockerClient) -> list:
    """Containers of THIS test module (other users may share the engine)."""
    mine = client.containers.list(
        all=True, ignore_removed=True, filters={"label": ["taskexec.managed=1", "taskexec.worker_id=w-test"]})
    tagged = client.containers.list(all=True, sparse=True, filters={"label": ["taskexec.managed=1", TEST_LABEL]})
    return list({x.id: x for x in mine + tagged}.values())


@pytest.fixture(autouse=True)
def no_leftovers(docker_client: docker.DockerClient, runner: DockerRunner):
    yield
    assert runner.drain(), "background removals did not finish"
    left = managed(docker_client)
    assert not left, f"sandbox containers left behind: {[x.attrs.get('Names') or x.name for x in left]}"


def run(runner: DockerRunner, code: str, runtime: str = "python", input=None, **kw) -> RunResult:
    spec = RunSpec(task_id=kw.pop("task_id", f"t-{uuid.uuid4().hex[:8]}"), attempt=1, runtime=runtime,
                   code=code, input=input, worker_id="w-test", **kw)
    return runner.run(spec)


def test_python_main_input_to_output(runner: DockerRunner) -> None:
    res = run(runner, "def main(inp):\n    print('hello')\n    return {'sum': sum(inp['xs'])}\n",
              input={"xs": [1, 2, 3]})
    assert res.ok, res
    assert res.output == {"sum": 6}
    assert res.error_code is None and res.exit_code == 0
    assert "hello" in res.stdout_tail
    assert res.duration_ms > 0 and res.cpu_time_ms is not None and res.peak_memory_bytes
    assert res.environment["image"] == "taskexec-sandbox-python:1"
    assert res.environment["runtime"] == "python"


def test_python_output_file_style(runner: DockerRunner) -> None:
    code = ("import json\nd = json.load(open('/task/input.json'))\n"
            "json.dump({'got': d}, open('/task/output/output.json', 'w'))\n")
    res = run(runner, code, input=[1, "a"])
    assert res.ok, res
    assert res.output == {"got": [1, "a"]}


def test_no_main_no_output_is_null(runner: DockerRunner) -> None:
    res = run(runner, "print('just a script')\n")
    assert res.ok and res.output is None


def test_shell_runtime(runner: DockerRunner) -> None:
    res = run(runner, 'echo "hi $TASK_ID"\ncat /task/input.json > /task/output/output.json\n',
              runtime="shell", input={"k": 1}, env={"TASK_ID": "abc"})
    assert res.ok, res
    assert res.output == {"k": 1}
    assert "hi abc" in res.stdout_tail
    assert res.environment["image"] == "taskexec-sandbox-shell:1"


def test_non_zero_exit(runner: DockerRunner) -> None:
    res = run(runner, "import sys\nprint('bye', file=sys.stderr)\nsys.exit(3)\n")
    assert res.error_code == "NON_ZERO_EXIT" and res.exit_code == 3
    assert "bye" in res.stderr_tail
    shell = run(runner, "exit 5", runtime="shell")
    assert shell.error_code == "NON_ZERO_EXIT" and shell.exit_code == 5


def test_exception_has_traceback(runner: DockerRunner) -> None:
    res = run(runner, "def main(i):\n    return 1 / 0\n")
    assert res.error_code == "NON_ZERO_EXIT" and res.error_details is not None
    assert res.error_details["exception"] == "ZeroDivisionError" and res.error_details["line"] == 2
    assert "Traceback" in res.stderr_tail and "ZeroDivisionError" in res.stderr_tail


def test_syntax_error_line_number(runner: DockerRunner) -> None:
    res = run(runner, "x = 1\ny = 2\ndef main(i)\n    return 1\n")
    assert res.error_code == "NON_ZERO_EXIT" and res.error_details is not None
    assert res.error_details["exception"] == "SyntaxError" and res.error_details["line"] == 3
    assert "line 3" in (res.error_message or "")


def test_non_json_output(runner: DockerRunner) -> None:
    res = run(runner, "def main(i):\n    return {1, 2}\n")
    assert res.error_code == "OUTPUT_VALIDATION_ERROR"
    res = run(runner, "open('/task/output/output.json', 'w').write('{not json')\n")
    assert res.error_code == "OUTPUT_VALIDATION_ERROR"


def test_time_limit(runner: DockerRunner) -> None:
    start = time.monotonic()
    res = run(runner, "while True:\n    pass\n", limits=Limits(timeout_s=2))
    assert res.error_code == "TIME_LIMIT_EXCEEDED"
    assert time.monotonic() - start < 2 + 3


@pytest.mark.parametrize("code", ["x = bytearray(512 * 2**20)\n",
                                  "x = []\nwhile True:\n    x.append(' ' * 100000)\n",
                                  "x = b'x' * (200 * 2**20)\n"])
def test_memory_limit(runner: DockerRunner, code: str) -> None:
    res = run(runner, code, limits=Limits(memory_bytes=64 * 2**20, timeout_s=30))
    assert res.error_code == "MEMORY_LIMIT_EXCEEDED", res


def test_memory_limit_shell_child(runner: DockerRunner) -> None:
    code = "python3 -c \"x = []\nwhile True: x.append(' ' * 100000)\"\n"
    res = run(runner, code, runtime="shell", limits=Limits(memory_bytes=64 * 2**20, timeout_s=30))
    assert res.error_code == "MEMORY_LIMIT_EXCEEDED", res


def test_fork_bomb_contained(runner: DockerRunner) -> None:
    res = run(runner, "import os\nwhile True:\n    os.fork()\n", limits=Limits(timeout_s=5, pids=32))
    assert res.error_code in ("NON_ZERO_EXIT", "TIME_LIMIT_EXCEEDED"), res
    # the worker (this process) is unharmed: it can still fork and run another task
    assert subprocess.run(["true"]).returncode == 0
    assert run(runner, "def main(i):\n    return 1\n").output == 1


def test_huge_stdout(runner: DockerRunner) -> None:
    start = time.monotonic()
    res = run(runner, "while True:\n    print('x' * 10000)\n", limits=Limits(output_bytes=256 * 1024))
    assert res.error_code == "OUTPUT_LIMIT_EXCEEDED"
    assert time.monotonic() - start < 10
    assert len(res.stdout_tail) <= runner.log_tail_bytes


def test_huge_output_file(runner: DockerRunner) -> None:
    res = run(runner, "open('/task/output/output.json', 'w').write('1' * 3 * 2**20)\n")
    assert res.error_code == "OUTPUT_LIMIT_EXCEEDED"


def test_no_network(runner: DockerRunner, docker_client: docker.DockerClient) -> None:
    gateway = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0].get("Gateway", "172.17.0.1")
    code = f"""
import socket, os
def main(i):
    out = {{}}
    for host in ("127.0.0.1", {gateway!r}, "1.1.1.1"):
        s = socket.socket(); s.settimeout(2)
        try:
            s.connect((host, 6379)); out[host] = "connected"
        except OSError as e:
            out[host] = type(e).__name__
    out["docker_sock"] = os.path.exists("/var/run/docker.sock")
    out["ifaces"] = sorted(n for _, n in socket.if_nameindex())
    return out
"""
    res = run(runner, code)
    assert res.ok, res
    assert all(v != "connected" for k, v in res.output.items() if k[0].isdigit()), res.output
    assert res.output["docker_sock"] is False
    assert res.output["ifaces"] == ["lo"]


def test_network_needs_policy(runner: DockerRunner) -> None:
    code = "import socket\ndef main(i):\n    return sorted(n for _, n in socket.if_nameindex())\n"
    res = run(runner, code, network=True)  # runner.allow_network is False
    assert res.output == ["lo"]


def test_env_does_not_leak(runner: DockerRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret@db/x")
    res = run(runner, "import os\ndef main(i):\n    return dict(os.environ)\n",
              env={"TASK_ID": "t1", "WORKFLOW_ID": "w1", "MY_VAR": "v"})
    assert res.ok, res
    assert "DATABASE_URL" not in res.output
    assert {k: res.output[k] for k in ("TASK_ID", "WORKFLOW_ID", "MY_VAR")} == {
        "TASK_ID": "t1", "WORKFLOW_ID": "w1", "MY_VAR": "v"}
    assert set(res.output) <= {"TASK_ID", "WORKFLOW_ID", "MY_VAR", "PATH", "HOME", "LANG"}
    shell = run(runner, "env", runtime="shell")
    assert "DATABASE_URL" not in shell.stdout_tail


def test_filesystem_is_read_only(runner: DockerRunner) -> None:
    code = """
import os
def main(i):
    out = {}
    for path in ("/etc/x", "/x", "/usr/x", "/task/x2", "/tmp/x", "/task/output/x"):
        try:
            open(path, "w").write("1"); out[path] = "ok"
        except OSError as e:
            out[path] = e.errno
    return out
"""
    res = run(runner, code)
    assert res.ok, res
    assert res.output["/tmp/x"] == "ok" and res.output["/task/output/x"] == "ok"
    for path in ("/etc/x", "/x", "/usr/x"):
        assert res.output[path] != "ok"


def test_non_root_no_capabilities(runner: DockerRunner) -> None:
    code = """
import os
def main(i):
    caps = dict(l.split(":\\t") for l in open("/proc/self/status").read().splitlines() if l.startswith("Cap"))
    nnp = [l for l in open("/proc/self/status").read().splitlines() if l.startswith("NoNewPrivs")]
    return {"uid": os.getuid(), "euid": os.geteuid(), "caps": caps, "nnp": nnp}
"""
    res = run(runner, code)
    assert res.ok, res
    assert res.output["uid"] != 0 and res.output["euid"] != 0
    assert int(res.output["caps"]["CapEff"], 16) == 0
    assert int(res.output["caps"]["CapBnd"], 16) == 0
    assert res.output["nnp"] == ["NoNewPrivs:\t1"]


def test_container_hardening_and_labels(runner: DockerRunner, docker_client: docker.DockerClient) -> None:
    seen: dict = {}

    def watch() -> None:
        for _ in range(100):
            found = managed(docker_client)
            if found:
                seen["attrs"] = found[0].attrs
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    res = run(runner, "import time\ntime.sleep(3)\n", task_id="label-task")
    t.join()
    assert res.ok
    attrs = seen["attrs"]
    hc, labels = attrs["HostConfig"], attrs["Config"]["Labels"]
    assert labels[c.LABEL_TASK] == "label-task" and labels[c.LABEL_WORKER] == "w-test"
    assert labels[c.LABEL_ATTEMPT] == "1" and float(labels[c.LABEL_DEADLINE]) > time.time()
    assert hc["NetworkMode"] == "none" and hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"]
    assert hc["Memory"] == hc["MemorySwap"] == 128 * 2**20 and hc["PidsLimit"] == 64
    assert not hc.get("Binds") and not attrs.get("Mounts")
    assert attrs["Config"]["User"] != "" and not attrs["Config"]["User"].startswith("0")


def test_cancel(runner: DockerRunner) -> None:
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    start = time.monotonic()
    res = runner.run(RunSpec("cancel-me", 1, "python", "import time\ntime.sleep(60)\n", None,
                             worker_id="w-test"), cancel=cancel)
    assert res.error_code == "CANCELLED"
    assert time.monotonic() - start < 1.0 + 2.0


def test_kill_task(runner: DockerRunner) -> None:
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", run(
        runner, "import time\ntime.sleep(60)\n", task_id="kill-me")))
    t.start()

    def running() -> bool:  # the task's container exists and runs (not a fixed sleep: a loaded engine is slow)
        return any(reaper_mod.describe(e)["taskId"] == "kill-me" and e.get("State") == "running"
                   for e in reaper_mod.list_managed(runner.api))

    wait_for(running, 60, 0.1, what="the task's container running")
    assert runner.kill_task("kill-me") == 1
    t.join(timeout=5)
    assert out["r"].error_code == "CANCELLED"


def test_reaper(runner: DockerRunner, docker_client: docker.DockerClient, images: dict) -> None:
    # Scoped by a per-test label so that other users of a shared engine are never touched;
    # DockerRunner.reap() is the same function without the scope.
    scope = {TEST_LABEL: uuid.uuid4().hex}
    key = c.ContainerKey(image=images["python"], runtime="python", limits_class=Limits().container_class(),
                         network=False, worker_id="dead-worker")
    past = c.create(runner.api, key, c.labels_for(key, "expired-task", 2, time.time() - 3600, False, scope))
    orphan = c.create(runner.api, key, c.labels_for(key, "orphan-task", 1, time.time() + 3600, False, scope))
    key_live = c.ContainerKey(image=images["python"], runtime="python",
                              limits_class=Limits().container_class(), network=False, worker_id="live")
    alive = c.create(runner.api, key_live,
                     c.labels_for(key_live, "live-task", 1, time.time() + 3600, False, scope))
    for cid in (past, orphan, alive):
        runner.api.start(cid)
    try:
        first = reaper_mod.reap(runner.api, labels=scope)  # deadline only
        assert [(r["taskId"], r["attempt"], r["reason"]) for r in first] == [("expired-task", 2, "deadline")]
        second = reaper_mod.reap(runner.api, live_worker_ids={"live"}, labels=scope)
        assert [(r["taskId"], r["workerId"], r["reason"]) for r in second] == [
            ("orphan-task", "dead-worker", "worker_gone")]
        assert {x.id for x in managed(docker_client)} == {alive}
    finally:
        for cid in (past, orphan, alive):
            with contextlib.suppress(docker.errors.NotFound):
                runner.api.remove_container(cid, force=True)


def test_reaper_of_a_deployment_leaves_other_deployments_alone(images: dict[str, str]) -> None:
    """Two deployments on one engine: each reaps only containers carrying its own deployment label."""
    ours, theirs = (DockerRunner(images=images, pool_size=0, deployment=f"dep-{uuid.uuid4().hex[:8]}")
                    for _ in range(2))
    key = c.ContainerKey(image=images["python"], runtime="python", limits_class=Limits().container_class(),
                         network=False, worker_id="gone-worker")
    made = {name: c.create(r.api, key, c.labels_for(key, f"{name}-task", 1, time.time() + 3600, False, r.scope))
            for name, r in (("ours", ours), ("theirs", theirs))}
    try:
        reaped = ours.reap(live_worker_ids=set())
        assert [(r["taskId"], r["reason"]) for r in reaped] == [("ours-task", "worker_gone")]
        left = {x["Id"] for x in ours.api.containers(all=True, filters={"label": "taskexec.managed=1"})}
        assert made["theirs"] in left and made["ours"] not in left
        assert [r["taskId"] for r in theirs.reap(live_worker_ids=set())] == ["theirs-task"]
    finally:
        for cid in made.values():
            with contextlib.suppress(docker.errors.NotFound):
                ours.api.remove_container(cid, force=True)
        ours.close()
        theirs.close()


def test_image_missing_is_sandbox_unavailable() -> None:
    from sandbox import SandboxUnavailable

    r = DockerRunner({"python": "taskexec-sandbox-does-not-exist:0"}, pool_size=0)
    with pytest.raises(SandboxUnavailable):
        r.run(RunSpec("x", 1, "python", "print(1)", None))
    assert r.ping() is True


def test_concurrent_runs(runner: DockerRunner) -> None:
    results: list = []

    def one(n: int) -> None:
        results.append(run(runner, f"def main(i):\n    return i * {n}\n", input=2))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.output for r in results) == [0, 2, 4, 6]



def test_container_runtime_is_selectable(images: dict) -> None:
    """TEL_SANDBOX_RUNTIME picks the OCI runtime (e.g. runsc when installed); a wrong one is our fault."""
    explicit = DockerRunner(images=images, container_runtime="runc", pool_size=0)
    try:
        res = run(explicit, "def main(i):\n    return 1\n")
        assert res.ok and res.environment["containerRuntime"] == "runc"
    finally:
        explicit.close()
    wrong = DockerRunner(images=images, container_runtime="no-such-runtime", pool_size=0)
    try:
        with pytest.raises(SandboxUnavailable):
            run(wrong, "def main(i):\n    return 1\n")
    finally:
        wrong.close()
