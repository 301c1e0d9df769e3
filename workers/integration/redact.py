"""Keeping secret values out of everything an attempt reports: metadata, errors, output, logs."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters whose values are credentials by name, whatever their value.
SECRET_PARAM = re.compile(r"(key|token|secret|passw|pwd|sig|auth|credential|session|code)", re.IGNORECASE)
MIN_SECRET_LEN = 3  # shorter values would garble every message they happen to occur in


class Redactor:
    """Remembers the secret values resolved for one attempt and masks them wherever they appear."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str) -> None:
        """Register a secret value and the encodings in which it may show up."""
        if len(value) < MIN_SECRET_LEN:
            return
        self._values |= {value, quote(value, safe=""), quote(value)}

    def add_basic(self, username: str, password: str) -> None:
        self.add(password)
        self.add(base64.b64encode(f"{username}:{password}".encode()).decode())

    def text(self, value: str) -> str:
        for secret in sorted(self._values, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def deep(self, value: Any) -> Any:
        """`value` with every secret masked in its strings and keys (for outputs and error details)."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        return value

    def url(self, url: str, extra_params: dict[str, Any] | None = None) -> str:
        """The URL as shown in executionMetadata: userinfo and secret-bearing query values masked."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = (f"{MASK}@" if parts.username or parts.password else "") + host
        netloc += f":{parts.port}" if parts.port else ""
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        pairs += [(k, str(v)) for k, v in (extra_params or {}).items()]
        masked = [(k, MASK if SECRET_PARAM.search(k) else v) for k, v in pairs]
        query = urlencode(masked, safe="*")
        return self.text(urlunsplit((parts.scheme, netloc, parts.path, query, "")))
