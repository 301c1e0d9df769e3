"""Semantic versions of task definitions: `MAJOR.MINOR.PATCH`, ordered numerically (1.10.0 after 1.9.0).

Only the release triple is accepted (no `-beta.1` pre-release or `+build` suffix): a definition version
names what runs, and a pre-release ordering below its release would let "latest" go backwards. In the
database each version also has a sort key (`version_key`, three zero-padded numbers), so SQL orders and
takes the maximum the same way Python does.
"""

from __future__ import annotations

import re

PATTERN = r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$"
_RE = re.compile(PATTERN)
WIDTH = 9  # digits per part in the sort key (parts stay below 10^9)
FIRST = "1.0.0"


class InvalidVersion(ValueError):
    """Not a MAJOR.MINOR.PATCH version."""


def parse(text: str) -> tuple[int, int, int]:
    match = _RE.match(text)
    if match is None:
        raise InvalidVersion(f"{text!r} is not a semantic version MAJOR.MINOR.PATCH such as 1.2.0 "
                             "(numbers without leading zeros, at most 9 digits each)")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def sort_key(text: str) -> str:
    """`1.10.0` -> `000000001.000000010.000000000`: sorts as strings exactly as the versions do."""
    return ".".join(f"{part:0{WIDTH}d}" for part in parse(text))


def next_patch(text: str | None) -> str:
    """The version after `text` when none is given: the next patch (1.2.0 -> 1.2.1); the first is 1.0.0."""
    if text is None:
        return FIRST
    major, minor, patch = parse(text)
    return f"{major}.{minor}.{patch + 1}"
