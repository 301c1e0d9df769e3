"""The egress address policy as data: every refused range, every spelling of an address, the allowlist.

`check_url` resolves with the system's getaddrinfo; every host here is a numeric spelling, which getaddrinfo
turns into an address without asking any DNS server, and nothing connects anywhere.
"""

from __future__ import annotations

import pytest

from taskexec.core.exceptions import DestinationNotAllowed
from taskexec.core.netpolicy import check_url, parse_networks, refusal, refused_ipv4_networks

REFUSED = {
    "http://169.254.169.254/latest/meta-data/": "link-local",  # cloud instance credentials
    "http://10.0.0.1/": "private (RFC 1918)",
    "http://172.16.0.1/": "private (RFC 1918)",
    "http://172.31.255.254/": "private (RFC 1918)",
    "http://192.168.1.1/": "private (RFC 1918)",
    "http://100.64.0.1/": "shared address space (CGNAT)",
    "http://0.0.0.0/": "unspecified",
    "http://0/": "unspecified",
    "http://127.0.0.1:9542/metrics": "loopback",
    "http://127.0.0.2/": "loopback",
    "http://127.1/": "loopback",
    "http://2130706433/": "loopback",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/": "loopback",  # ... in hex
    "http://0177.0.0.1/": "loopback",  # ... in octal
    "http://017700000001/": "loopback",
    "http://[::1]/": "loopback",
    "http://[::]/": "unspecified",
    "http://[::ffff:127.0.0.1]/": "IPv4-mapped IPv6 (loopback)",
    "http://[::ffff:7f00:1]/": "IPv4-mapped IPv6 (loopback)",
    "http://[::ffff:169.254.169.254]/": "IPv4-mapped IPv6 (link-local)",
    "http://[::ffff:8.8.8.8]/": "IPv4-mapped IPv6",  # a mapped form is refused even for a public address
    "http://[::127.0.0.1]/": "IPv4-compatible IPv6 (loopback)",
    "http://[::ffff:0:7f00:1]/": "IPv4-translated IPv6 (loopback)",
    "http://[64:ff9b::a9fe:a9fe]/": "link-local via NAT64",
    "http://[2002:a00:1::1]/": "private (RFC 1918) via 6to4",
    "http://[fd00::1]/": "unique-local",
    "http://[fc00::1]/": "unique-local",
    "http://[fe80::1]/": "link-local",
    "http://[fec0::1]/": "site-local",
    "http://[ff02::1]/": "multicast",
    "http://[2001:db8::1]/": "documentation",
    "http://[64:ff9b:1::a00:1]/": "local-use NAT64",
    "http://224.0.0.1/": "multicast",
    "http://239.255.255.250:1900/": "multicast",
    "http://240.0.0.1/": "reserved",
    "http://255.255.255.255/": "reserved",
    "http://192.0.2.1/": "documentation",
    "http://198.18.0.1/": "benchmarking",
    "https://10.1.2.3:8443/x": "private (RFC 1918)",
}
ALLOWED = ["http://8.8.8.8/", "https://1.1.1.1:8443/", "http://[2606:4700:4700::1111]/",
           "http://[64:ff9b::808:808]/",  # NAT64 of a public address (DNS64 networks)
           "http://134744072/"]  # 8.8.8.8 as one decimal number


@pytest.mark.parametrize("url, reason", REFUSED.items(), ids=list(REFUSED))
def test_refused_addresses_in_every_spelling(url: str, reason: str) -> None:
    with pytest.raises(DestinationNotAllowed) as caught:
        check_url(url)
    assert caught.value.reason == reason
    assert caught.value.address not in str(caught.value) or caught.value.host == caught.value.address


@pytest.mark.parametrize("url", ALLOWED)
def test_public_addresses_pass(url: str) -> None:
    assert check_url(url)


def test_the_allowlist_opens_exactly_its_ranges() -> None:
    only_one = parse_networks("127.0.0.1/32")
    assert check_url("http://127.0.0.1:8080/", only_one) == [(check_url("http://127.0.0.1/", only_one)[0][0],
                                                             "127.0.0.1")]
    for url in ("http://127.0.0.2/", "http://2130706434/", "http://0x7f000002/", "http://[::1]/"):
        with pytest.raises(DestinationNotAllowed):
            check_url(url, only_one)
    assert refusal("::ffff:127.0.0.1", only_one) is None  # the mapped form of an allowed address
    wide = parse_networks("10.0.0.0/8, fd00::/8, 192.168.1.5")
    assert refusal("10.20.30.40", wide) is None and refusal("fd12::1", wide) is None
    assert refusal("192.168.1.5", wide) is None and refusal("192.168.1.6", wide) == "private (RFC 1918)"


@pytest.mark.parametrize("text", ["10.0.0.1/8", "not-a-network", "10.0.0.0/33", "fd00::/129"])
def test_a_bad_allowlist_entry_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="invalid network"):
        parse_networks(f"192.168.0.0/16,{text}")


def test_settings_refuse_a_bad_allowlist() -> None:
    from taskexec.core.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="TEL_INTEGRATION_ALLOWED_NETWORKS"):
        load_settings(TEL_INTEGRATION_ALLOWED_NETWORKS="10.0.0.1/8")
    with pytest.raises(ConfigError, match="TEL_SANDBOX_ALLOWED_NETWORKS"):
        load_settings(TEL_SANDBOX_ALLOWED_NETWORKS="nope")


def test_the_firewall_list_covers_the_refused_ipv4_ranges() -> None:
    cidrs = refused_ipv4_networks()
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10",
                "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"):
        assert net in cidrs


@pytest.mark.parametrize(("url", "reason"), [
    ("http://10.1.2.3/cb", "private (RFC 1918)"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[::1]:8080/cb", "loopback"),
    ("http://[::ffff:127.0.0.1]/cb", "IPv4-mapped IPv6 (loopback)"),
])
def test_a_callback_literal_in_a_refused_range_is_named_without_dns(url: str, reason: str) -> None:
    from taskexec.core.netpolicy import literal_refusal

    assert literal_refusal(url) == reason


def test_a_callback_name_or_an_allowed_literal_is_left_to_delivery() -> None:
    from taskexec.core.netpolicy import literal_refusal

    assert literal_refusal("https://hooks.example.com/cb") is None  # a name: checked when delivered
    assert literal_refusal("http://8.8.8.8/cb") is None
    assert literal_refusal("http://127.0.0.1:9/cb", parse_networks("127.0.0.1/32")) is None
