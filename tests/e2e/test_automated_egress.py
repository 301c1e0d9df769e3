"""An automated task with outbound access, end to end: real router, real automated worker (which installs the
egress rules itself, as root beside the engine), real Docker. The task tries the host's own address on its
network (its default gateway), where the test listens: refused, nothing arrives. Only this machine is
contacted.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from sandbox import egress as eg
from taskexec.core.netpolicy import refused_ipv4_networks
from tests.e2e.helpers import define, python_def, submit, wait_status
from tests.support import Stack, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CODE = """
import errno, socket, struct
def main(input):
    for line in open("/proc/net/route").read().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            gateway = socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect((gateway, input["port"])); result = "connected"
    except OSError as e:
        result = errno.errorcode.get(e.errno, type(e).__name__)
    return {"gateway": gateway, "result": result}
"""


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """The operator allows outbound access (the router accepts such definitions, the pool runs them)."""
    return {**env, "TEL_SANDBOX_ALLOW_NETWORK": "true"}


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[eg.EgressNetwork]:
    name = f"tel-e2e-egress-{uuid.uuid4().hex[:8]}"
    net = eg.ensure_network(docker_client, name)  # made here to listen on its gateway; the worker finds it
    yield net
    eg.remove(net)
    # The worker removes a finished container a moment later (sandbox.runner.REMOVE_DELAY_S), and at the
    # latest when it stops; the test asks for this fixture before `stack`, so the stack has stopped by now.
    wait_for(lambda: not docker_client.networks.get(name).attrs.get("Containers"), 30,
             what="no container left on the task network")
    docker_client.networks.get(name).remove()


def test_a_task_with_outbound_access_cannot_reach_the_host(network: eg.EgressNetwork, stack: Stack,
                                                           docker_client: Any) -> None:
    listener = socket.socket()
    listener.bind((network.gateway, 0))  # this host's address on the task's network
    listener.listen(4)
    listener.settimeout(0.2)
    accepted: list[Any] = []
    done = threading.Event()

    def watch() -> None:  # records any connection that reaches the host; ends before the listener closes
        while not done.is_set():
            try:
                conn, address = listener.accept()
            except TimeoutError:
                continue
            conn.close()
            accepted.append(address)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        stack.start_worker("automated", concurrency=1, TEL_SANDBOX_NETWORK=network.name,
                           TEL_SANDBOX_POOL_SIZE="0")  # no idle containers left on the network at teardown
        define(stack, python_def("reach-host", CODE, network={"outboundAccess": True}))
        task = wait_status(stack, submit(stack, "reach-host", {"port": listener.getsockname()[1]}).json()["id"])
    finally:
        done.set()
        watcher.join(5)
        listener.close()
    assert task["status"] == "COMPLETED", task
    assert task["output"] == {"gateway": network.gateway, "result": "EHOSTUNREACH"}, task["output"]
    assert accepted == []
    assert eg.installed(network, refused_ipv4_networks(), [], eg.host_resolvers())  # installed by the worker
