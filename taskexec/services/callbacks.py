"""POSTs to a task's `callbackUrl`: a user-supplied URL, so it gets the integration pool's egress rule.

The router reaches public addresses only, plus the ranges of TEL_CALLBACK_ALLOWED_NETWORKS. A URL whose
host is an IP literal in a refused range is refused when the task is submitted (422 on `callbackUrl`,
`check_submitted`). A name is resolved at each delivery: every address it resolves to is checked
(`taskexec.core.netpolicy.check_url`), and the connection goes to the checked address with the URL's
host in `Host` and in TLS's server name, so a DNS answer that changes between the check and the
connection cannot redirect it (DNS rebinding). Callbacks never go through an HTTP(S) proxy, and each
delivery opens its own connection (they are rare next to the orchestrator's, which stay kept alive).
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

from taskexec.core.exceptions import ValidationFailed
from taskexec.core.netpolicy import Network, check_url, literal_refusal

MAX_ANSWER = 64 * 1024  # only the status matters; the answer is read up to this and dropped


def check_submitted(url: str | None, allowed: Sequence[Network]) -> None:
    """422 naming `callbackUrl` when its host is an IP literal the router may not reach (names: at delivery)."""
    if not url:
        return
    why = literal_refusal(url, allowed)
    if why is not None:
        raise ValidationFailed("callbackUrl may not point at this address",
                               details=[{"field": "callbackUrl", "message": f"{why} address not allowed"}])


def post(url: str, body: bytes, headers: dict[str, str], allowed: Sequence[Network],
         timeout: tuple[float, float]) -> int:
    """POST `body` to `url` at an address that passed the egress rule; the answer's status.

    Raises `DestinationNotAllowed` (nothing sent), `socket.gaierror` (the name does not resolve) or
    `OSError`/`http.client.HTTPException` for the connection."""
    parts = urlsplit(url)
    https = parts.scheme.lower() == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    _, address = check_url(url, allowed)[0]
    conn: http.client.HTTPConnection = (_PinnedTLS(address, port, host, timeout[0]) if https
                                        else http.client.HTTPConnection(address, port, timeout=timeout[0]))
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(timeout[1])
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = host if ":" not in host else f"[{host}]"
        if parts.port:
            netloc += f":{parts.port}"
        conn.request("POST", path, body, {**headers, "Host": netloc, "Connection": "close"})
        answer = conn.getresponse()
        answer.read(MAX_ANSWER)
        return answer.status
    finally:
        conn.close()


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to a given address, with the certificate checked against the URL's host name."""

    def __init__(self, address: str, port: int, server_name: str, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self.server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)  # type: ignore[attr-defined]
