"""Resource quantities ('128Mi', '500m') and the retry delay formula (docs/architecture.md, retries)."""

from __future__ import annotations

import pytest

from taskexec.core.limits import parse_cpu, parse_memory
from taskexec.services.manager import backoff_delay


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("128Mi", 128 * 1024**2),
        ("2Gi", 2 * 1024**3),
        ("512Ki", 512 * 1024),
        ("1G", 10**9),
        ("100M", 10**8),
        ("1.5Gi", int(1.5 * 1024**3)),
        ("4096", 4096),
        (1024, 1024),
        (" 64Mi ", 64 * 1024**2),
    ],
)
def test_memory(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["", "lots", "12Xi", "-1Mi", "1 GB", "Mi"])
def test_memory_invalid(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_memory(bad)


@pytest.mark.parametrize(
    ("text", "expected"), [("500m", 0.5), ("0.5", 0.5), ("2", 2.0), (1.5, 1.5), ("250m", 0.25)]
)
def test_cpu(text: str | float, expected: float) -> None:
    assert parse_cpu(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["", "fast", "0", "-1", "0m", "m"])
def test_cpu_invalid(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu(bad)


def samples(policy: dict[str, float], n: int, k: int = 400) -> list[float]:
    return [backoff_delay(policy, n) for _ in range(k)]


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_backoff_is_interval_times_multiplier_power_with_jitter(n: int) -> None:
    policy = {"retryInterval": 1000, "backoffMultiplier": 3.0}
    nominal = 1000 * 3.0**n / 1000.0
    got = samples(policy, n)
    assert all(0.8 * nominal - 1e-9 <= d <= 1.2 * nominal + 1e-9 for d in got)
    assert min(got) < 0.9 * nominal and max(got) > 1.1 * nominal  # jitter is really applied both ways


def test_backoff_capped_by_max_retry_interval() -> None:
    policy = {"retryInterval": 1000, "backoffMultiplier": 2.0, "maxRetryInterval": 5000}
    got = samples(policy, 10)  # uncapped would be 1024 s
    assert all(4.0 - 1e-9 <= d <= 6.0 + 1e-9 for d in got)


def test_backoff_defaults_and_zero_interval() -> None:
    assert all(0.8 <= d <= 1.2 for d in samples({}, 0, 50))
    assert all(1.6 <= d <= 2.4 for d in samples({}, 1, 50))
    assert samples({"retryInterval": 0}, 3, 5) == [0.0] * 5
