"""Outbound access for sandbox containers: a dedicated Docker network from which only public addresses are reachable.

A task whose definition asks for `network.outboundAccess` (and the operator allows it) runs on its own
user-defined bridge network (default `taskexec-egress`, containers isolated from each other: ICC off, no
IPv6), never on Docker's default bridge. Two iptables chains, installed on the host of the Docker engine
(the network namespace where the bridge lives), decide what leaves it:

* `DOCKER-USER` (Docker's hook in FORWARD) jumps to `TEL-F-<id>` for packets from the bridge: replies
  pass, the operator's allowlist passes, DNS (port 53) to the engine host's own resolvers passes, every
  refused range (private, loopback, link-local, CGNAT, multicast, reserved, ...; the list comes from the
  caller, see `taskexec.core.netpolicy`) is rejected, the rest (the public internet) passes;
* `INPUT` jumps to `TEL-I-<id>` for packets from the bridge to the host itself (any of its addresses,
  public ones included): replies and the allowlist pass, everything else is rejected. So the host's own
  services (Redis, PostgreSQL, the Docker API, the worker's metrics port) are out of reach.

Rejected packets get an ICMP "administratively prohibited" answer, so a refused connect fails at once.
The rules are applied by `install()` (the automated worker does it at start when it runs beside the engine
as root) or printed by `taskexec sandbox egress-rules --print` for a host or sidecar set up by other means.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from sandbox.errors import SandboxUnavailable

log = logging.getLogger(__name__)
MANAGED_LABEL = "taskexec.managed"
REJECT = ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]
REPLIES = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"]
RECHECK_S = 60.0  # how long a verified rule set is trusted before it is checked again
Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class EgressNetwork:
    """The Docker network of tasks with outbound access, as the firewall needs to know it."""

    name: str
    bridge: str  # the host interface of the bridge
    subnet: str
    gateway: str

    @property
    def chains(self) -> tuple[str, str]:
        """(forward chain, input chain): named after the network so several deployments can coexist."""
        tag = hashlib.sha1(self.name.encode()).hexdigest()[:8]
        return f"TEL-F-{tag}", f"TEL-I-{tag}"


def bridge_name(network: str) -> str:
    """A Linux interface name (at most 15 characters) for the network's bridge."""
    return "tel" + hashlib.sha1(network.encode()).hexdigest()[:10]


def ensure_network(client: Any, name: str) -> EgressNetwork:
    """The egress network, created if missing (bridge named by `bridge_name`, ICC off, masquerading on)."""
    try:
        net = client.networks.get(name)
    except docker.errors.NotFound:
        try:
            net = client.networks.create(
                name, driver="bridge", check_duplicate=True, enable_ipv6=False, internal=False,
                labels={MANAGED_LABEL: "1"},
                options={"com.docker.network.bridge.name": bridge_name(name),
                         "com.docker.network.bridge.enable_icc": "false",
                         "com.docker.network.bridge.enable_ip_masquerade": "true"})
        except docker.errors.APIError as exc:  # another worker created it meanwhile
            if exc.status_code != 409:
                raise
        net = client.networks.get(name)
    attrs = net.attrs
    if attrs.get("Driver") != "bridge":
        raise SandboxUnavailable(f"sandbox network {name!r} exists but is not a bridge network")
    options = attrs.get("Options") or {}
    bridge = options.get("com.docker.network.bridge.name") or f"br-{attrs['Id'][:12]}"
    ipam = [c for c in (attrs.get("IPAM") or {}).get("Config") or [] if ":" not in c.get("Subnet", ":")]
    if not ipam:
        raise SandboxUnavailable(f"sandbox network {name!r} has no IPv4 subnet")
    return EgressNetwork(name=name, bridge=bridge, subnet=ipam[0]["Subnet"], gateway=ipam[0].get("Gateway", ""))


def host_resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    """The engine host's IPv4 name servers (Docker's embedded DNS forwards the containers' queries to them)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    found = [parts[1] for parts in (line.split() for line in lines)
             if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]]
    return [ns for ns in found if not ns.startswith("127.")]


def chain_rules(net: EgressNetwork, refused: Sequence[str], allowed: Sequence[str] = (),
                resolvers: Sequence[str] = ()) -> dict[str, list[list[str]]]:
    """The content of both chains, in order, as iptables arguments after `-A <chain>`."""
    forward, incoming = net.chains
    fwd = [REPLIES] + [["-d", cidr, "-j", "RETURN"] for cidr in allowed]
    fwd += [["-d", ns, "-p", proto, "--dport", "53", "-j", "RETURN"] for ns in resolvers for proto in ("udp", "tcp")]
    fwd += [["-d", cidr, *REJECT] for cidr in refused] + [["-j", "RETURN"]]
    inp = [REPLIES] + [["-d", cidr, "-j", "RETURN"] for cidr in allowed] + [REJECT]
    return {forward: fwd, incoming: inp}


def jumps(net: EgressNetwork) -> list[list[str]]:
    """(builtin chain, match, target) rules that send the bridge's traffic to our chains."""
    forward, incoming = net.chains
    return [["DOCKER-USER", "-i", net.bridge, "-j", forward], ["INPUT", "-i", net.bridge, "-j", incoming]]


def script(net: EgressNetwork, refused: Sequence[str], allowed: Sequence[str] = (),
           resolvers: Sequence[str] = ()) -> str:
    """The same rule set as a POSIX shell script (idempotent), for hosts set up by other means."""
    lines = ["set -e", f"# taskexec sandbox egress rules for Docker network {net.name} (bridge {net.bridge})"]
    for chain, rules in chain_rules(net, refused, allowed, resolvers).items():
        lines += [f"iptables -w -N {chain} 2>/dev/null || true", f"iptables -w -F {chain}"]
        lines += [f"iptables -w -A {chain} {shlex.join(rule)}" for rule in rules]
    for builtin, *rest in jumps(net):
        rule = shlex.join(rest)
        lines.append(f"iptables -w -C {builtin} {rule} 2>/dev/null || iptables -w -I {builtin} 1 {rule}")
    return "\n".join(lines) + "\n"


def _iptables(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, timeout=30, check=False)


def install(net: EgressNetwork, refused: Sequence[str], allowed: Sequence[str] = (),
            resolvers: Sequence[str] = (), run: Runner = _iptables) -> None:
    """Apply the rule set (replacing an older one of the same network); raises SandboxUnavailable on failure."""
    for chain, rules in chain_rules(net, refused, allowed, resolvers).items():
        run(["-N", chain])  # fails harmlessly when it exists
        _must(run(["-F", chain]), "flush", chain)
        for rule in rules:
            _must(run(["-A", chain, *rule]), "append to", chain)
    for builtin, *rest in jumps(net):
        if run(["-C", builtin, *rest]).returncode != 0:
            _must(run(["-I", builtin, "1", *rest]), "insert into", builtin)


def installed(net: EgressNetwork, refused: Sequence[str], allowed: Sequence[str] = (),
              resolvers: Sequence[str] = (), run: Runner = _iptables) -> bool:
    """True when both chains hold the expected rules (as many, each present) and the jumps are in place."""
    for chain, rules in chain_rules(net, refused, allowed, resolvers).items():
        listing = run(["-S", chain])
        if listing.returncode != 0:
            return False
        if sum(line.startswith("-A ") for line in listing.stdout.splitlines()) != len(rules):
            return False
        if any(run(["-C", chain, *rule]).returncode != 0 for rule in rules):
            return False
    return all(run(["-C", builtin, *rest]).returncode == 0 for builtin, *rest in jumps(net))


def remove(net: EgressNetwork, run: Runner = _iptables) -> None:
    """Take the rule set away (tests, `taskexec sandbox egress-rules --remove`)."""
    for builtin, *rest in jumps(net):
        while run(["-C", builtin, *rest]).returncode == 0:
            run(["-D", builtin, *rest])
    for chain in net.chains:
        run(["-F", chain])
        run(["-X", chain])


def _must(result: subprocess.CompletedProcess[str], what: str, chain: str) -> None:
    if result.returncode != 0:
        raise SandboxUnavailable(f"cannot {what} iptables chain {chain}: {result.stderr.strip() or result.stdout}")


class Egress:
    """What the runner asks before creating a container with outbound access: the network to put it on.

    `mode` "install": ensure the network and install the rules with the local iptables (the worker runs
    beside the engine, as root); "external": ensure the network and trust that the rules were installed by
    other means (`taskexec sandbox egress-rules --print`). Either way a failure is SandboxUnavailable, so a
    task asking for network never runs without the rules (fail closed).
    """

    def __init__(self, name: str, refused: Sequence[str], allowed: Sequence[str] = (), mode: str = "install",
                 resolvers: Sequence[str] | None = None, run: Runner = _iptables) -> None:
        if mode not in ("install", "external"):
            raise ValueError(f"egress mode must be install or external, not {mode!r}")
        self.name = name
        self.refused = list(refused)
        self.allowed = list(allowed)
        self.mode = mode
        self.resolvers = host_resolvers() if resolvers is None else list(resolvers)
        self.run = run
        self._checked_at = float("-inf")
        self._net: EgressNetwork | None = None
        self._lock = threading.Lock()

    def network(self, client: Any) -> EgressNetwork:
        """The network to use on the engine of `client` (checked at most every RECHECK_S); raises
        SandboxUnavailable."""
        with self._lock:
            if self._net is not None and time.monotonic() - self._checked_at < RECHECK_S:
                return self._net
            try:
                net = ensure_network(client, self.name)
            except (docker.errors.DockerException, OSError) as exc:
                raise SandboxUnavailable(f"cannot set up the sandbox egress network {self.name!r}: {exc}") from exc
            if self.mode == "install":
                self._install(client, net)
            self._net, self._checked_at = net, time.monotonic()
            return net

    def _install(self, client: Any, net: EgressNetwork) -> None:
        base_url = str(getattr(getattr(client, "api", None), "base_url", ""))
        if not base_url.startswith("http+docker://"):  # a remote engine: local rules would guard nothing
            raise SandboxUnavailable(
                f"the Docker engine ({base_url}) is not on this host, so this worker cannot install its egress "
                "rules: install them there with `taskexec sandbox egress-rules` and set "
                "TEL_SANDBOX_EGRESS_RULES=external")
        try:
            if not installed(net, self.refused, self.allowed, self.resolvers, self.run):
                install(net, self.refused, self.allowed, self.resolvers, self.run)
                log.info("sandbox egress rules installed", extra={"network": net.name, "bridge": net.bridge})
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxUnavailable(
                f"cannot install the sandbox egress rules ({exc}); run the worker as root beside the Docker "
                "engine, or install them with `taskexec sandbox egress-rules` and set "
                "TEL_SANDBOX_EGRESS_RULES=external") from exc
