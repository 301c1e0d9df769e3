"""Which addresses user-controlled network traffic may reach: public ones only, unless the operator allows more.

Used by the integration pool's egress guard (`workers/integration/egress.py`: every address a definition's
URL resolves to, and every redirect, is checked before connecting) and by the sandbox's egress rules for
automated tasks with outbound access (`sandbox/egress.py` gets `refused_ipv4_networks()`).

Refused: unspecified, loopback, RFC 1918 private, link-local (cloud metadata at 169.254.169.254),
shared address space (CGNAT, 100.64.0.0/10), IETF/documentation/benchmarking ranges, multicast,
reserved and broadcast; for IPv6 the same kinds plus unique-local (fc00::/7), site-local, and every
IPv4-mapped, -compatible or -translated form (`::ffff:127.0.0.1`). NAT64 (64:ff9b::/96) and 6to4
(2002::/16) addresses are judged by the IPv4 address they embed. Any other IPv6 address outside global
unicast (2000::/3) is refused too. An operator opens ranges on purpose with an allowlist of CIDRs.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from taskexec.core.exceptions import DestinationNotAllowed

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes 255.255.255.255
)
_V6: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped IPv6"),
    ("::ffff:0:0:0/96", "IPv4-translated IPv6"),
    ("::/96", "IPv4-compatible IPv6"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (Teredo, ...)"),
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
REFUSED_V4 = tuple((ipaddress.IPv4Network(net), why) for net, why in _V4)
REFUSED_V6 = tuple((ipaddress.IPv6Network(net), why) for net, why in _V6)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.1.0.0/16, 192.168.5.7, fd00::/8` -> networks (a bare address is a /32 or /128); ValueError names
    the bad entry."""
    out: list[Network] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ValueError(f"invalid network {item!r}: {exc}") from None
    return tuple(out)


def embedded_ipv4(ip: Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, translated, NAT64, 6to4) and the form."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    value = int(ip)
    if value >> 32 == 0xFFFF0000:  # ::ffff:0:a.b.c.d
        return ipaddress.IPv4Address(value & 0xFFFFFFFF), "IPv4-translated"
    if value >> 32 == 0 and value > 1:  # ::a.b.c.d (deprecated)
        return ipaddress.IPv4Address(value), "IPv4-compatible"
    return None


def refusal(address: str | Address, allowed: Sequence[Network] = ()) -> str | None:
    """Why user traffic may not go to `address` (e.g. "loopback"), or None when it may."""
    ip = address if not isinstance(address, str) else ipaddress.ip_address(address.split("%", 1)[0])
    inner = embedded_ipv4(ip)
    if any(candidate in net for candidate in (ip, inner[0] if inner else None) if candidate is not None
           for net in allowed if net.version == candidate.version):
        return None
    if inner is not None:
        v4, form = inner
        why = _refusal_v4(v4)
        if form in ("NAT64", "6to4"):  # a translator in front of an IPv4 host: judged by that host
            return f"{why} via {form}" if why else None
        return f"{form} IPv6 ({why})" if why else f"{form} IPv6"
    if isinstance(ip, ipaddress.IPv4Address):
        return _refusal_v4(ip)
    for net, why in REFUSED_V6:
        if ip in net:
            return why
    return None if ip in GLOBAL_UNICAST_V6 else "reserved"


def _refusal_v4(ip: ipaddress.IPv4Address) -> str | None:
    for net, why in REFUSED_V4:
        if ip in net:
            return why
    return None if ip.is_global else "not globally routable"


def refused_ipv4_networks() -> list[str]:
    """The IPv4 ranges user traffic may not reach, as CIDR strings for firewall rules (an allowlist goes
    before them, see `sandbox/egress.py`)."""
    return [str(net) for net, _ in REFUSED_V4]


def resolve(host: str, port: int, allowed: Sequence[Network] = ()) -> list[tuple[int, str]]:
    """Resolve `host` (a name or any IP spelling: `2130706433`, `0x7f000001`, `[::1]`) and check every
    address; returns (family, address) pairs to connect to. Raises DestinationNotAllowed if any address is
    refused (a name with one private answer among public ones is refused: it is somebody's trick), and
    socket.gaierror when the name does not resolve."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    infos = socket.getaddrinfo(name, port, 0, socket.SOCK_STREAM)
    found: list[tuple[int, str]] = []
    for family, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        why = refusal(address, allowed)
        if why is not None:
            raise DestinationNotAllowed(host, address, why)
        if (family, address) not in found:
            found.append((family, address))
    return found


def check_url(url: str, allowed: Sequence[Network] = ()) -> list[tuple[int, str]]:
    """`resolve` for the host and port of an http(s) URL."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    return resolve(parts.hostname or "", port, allowed)


def literal_refusal(url: str, allowed: Sequence[Network] = ()) -> str | None:
    """Why an http(s) URL whose host is an IP literal may not be reached (None for a name, or an address that
    may be): the check that needs no DNS, for refusing a user's URL when it is submitted."""
    host = urlsplit(url).hostname or ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return refusal(ip, allowed)
