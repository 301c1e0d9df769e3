"""Automated tasks with outbound access: from their network, the host's own services and private ranges are
unreachable. Real Docker engine, real iptables (this test runs as root on the engine's host, as CI does).

Only this machine's own addresses are tried: the egress bridge's gateway (the host side of the task's own
network) and the gateway of Docker's default bridge (another host address, in a private range), on ports
this test listens on. Nothing is sent anywhere else. The same code with the gateways in the allowlist
connects, so the refusals are the rules' doing.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from sandbox import DockerRunner, RunSpec, build_images
from sandbox import egress as eg
from taskexec.core.netpolicy import refused_ipv4_networks

pytestmark = pytest.mark.docker

PROBE = """
import errno, socket
def main(targets):
    out = {}
    for host, port in targets:
        s = socket.socket(); s.settimeout(5)
        try:
            s.connect((host, port)); out[host] = "connected"
        except OSError as e:
            out[host] = errno.errorcode.get(e.errno, type(e).__name__)
        finally:
            s.close()
    return out
"""


class Listener:
    """A TCP port on one of this host's addresses, counting the connections it accepts."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.address, self.port = self.sock.getsockname()
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[eg.EgressNetwork]:
    name = f"tel-test-egress-{uuid.uuid4().hex[:8]}"
    net = eg.ensure_network(docker_client, name)
    yield net
    eg.remove(net)
    docker_client.networks.get(name).remove()


def probe(network: eg.EgressNetwork, allowed: list[str], targets: list[Listener]) -> dict[str, Any]:
    egress = eg.Egress(network.name, refused_ipv4_networks(), allowed, mode="install")
    runner = DockerRunner(build_images(log=lambda _msg: None), pool_size=0, allow_network=True, egress=egress)
    try:
        spec = RunSpec(task_id=f"egress-{uuid.uuid4().hex[:8]}", attempt=1, runtime="python", code=PROBE,
                       input=[[t.address, t.port] for t in targets], worker_id="w-egress", network=True)
        res = runner.run(spec)
    finally:
        runner.close()
    assert res.ok, (res.error_code, res.error_message, res.stderr_tail[-2000:])
    return res.output  # type: ignore[no-any-return]


def test_the_host_and_private_ranges_are_unreachable_from_the_egress_network(
        network: eg.EgressNetwork, docker_client: docker.DockerClient) -> None:
    ipam = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]  # docker0 on this host
    default_gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    own, other = Listener(network.gateway), Listener(default_gateway)  # both are this host's addresses
    try:
        got = probe(network, [], [own, other])
        # rejected at once by the rules (ICMP administratively prohibited), not connected, not timed out
        assert got == {own.address: "EHOSTUNREACH", other.address: "EHOSTUNREACH"}, got
        assert own.accepted == 0 and other.accepted == 0
        assert eg.installed(network, refused_ipv4_networks(), [], eg.host_resolvers())
        # the control: the same code with both addresses allowed reaches them
        got = probe(network, [f"{own.address}/32", f"{other.address}/32"], [own, other])
        assert got == {own.address: "connected", other.address: "connected"}, got
        assert own.accepted == 1 and other.accepted == 1
    finally:
        own.close()
        other.close()


def test_without_its_rules_no_container_with_network_starts(network: eg.EgressNetwork,
                                                              docker_client: docker.DockerClient) -> None:
    """Fail closed: an egress whose rules cannot be verified or installed refuses (SandboxUnavailable)."""
    from sandbox import SandboxUnavailable

    def broken(args: list[str]) -> Any:
        raise FileNotFoundError("iptables")  # as on a host without iptables

    egress = eg.Egress(network.name, refused_ipv4_networks(), mode="install", run=broken)
    with pytest.raises(SandboxUnavailable, match="TEL_SANDBOX_EGRESS_RULES=external"):
        egress.network(docker_client)
