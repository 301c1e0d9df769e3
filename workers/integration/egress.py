"""The egress guard of integration calls: definition-controlled URLs reach public addresses only.

Each new connection resolves the host once, checks every address with `taskexec.core.netpolicy` (loopback,
private, link-local, CGNAT, unique-local, multicast, reserved, IPv4-mapped forms ... are refused unless
`TEL_INTEGRATION_ALLOWED_NETWORKS` opens them) and then connects to the address it checked: the socket is
opened to that IP literal, while the HTTP `Host` header, TLS SNI and certificate verification stay on the
name (urllib3 keeps using `self.host` for them). A second DNS answer cannot slip in between the check and
the connection (DNS rebinding). A refusal raises `DestinationNotAllowed` before anything is sent; it is
not an OSError, so urllib3 does not turn it into a retryable connection error.

The guard sits in the connection, so it applies to every hop: the first request, each redirect
(`SessionPool.send` follows them itself, see `http.py`), the OAuth2 token endpoint, and every reconnect
of a pooled keep-alive connection. Only the operator's own URL (the Integration Service) is exempt.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any

from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

from taskexec.core.exceptions import DestinationNotAllowed
from taskexec.core.netpolicy import Network, resolve

log = logging.getLogger(__name__)
MAX_ORIGINS = 256  # connection pools kept per kind; the least recently used origin's is closed beyond this


class _Guarded:
    """Mixin for urllib3 connections: resolve, check, connect to the checked address."""

    allowed: Sequence[Network] = ()
    # provided by urllib3's HTTPConnection
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        try:
            addresses = resolve(self._dns_host, self.port, self.allowed)
        except DestinationNotAllowed as exc:
            log.warning("integration call refused: destination not allowed",
                        extra={"host": exc.host, "address": exc.address, "reason": exc.reason})
            raise
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        last: OSError | None = None
        for _family, address in addresses:
            try:
                sock = connection.create_connection((address, self.port), self.timeout,
                                                    source_address=self.source_address,
                                                    socket_options=self.socket_options)
            except TimeoutError as exc:
                raise ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})") from exc
            except OSError as exc:
                last = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")  # type: ignore[arg-type]


class GuardedHTTPConnection(_Guarded, HTTPConnection):
    pass


class GuardedHTTPSConnection(_Guarded, HTTPSConnection):
    pass


def pool_manager(allowed: Sequence[Network] | None, size: int, ca_certs: str) -> PoolManager:
    """urllib3 connection pools per origin, kept alive; with `allowed` (the guarded kind) every connection
    goes through the guard with those networks opened, else (the operator's own URL) straight through."""
    manager = PoolManager(num_pools=MAX_ORIGINS, maxsize=size, block=False, retries=False,
                          cert_reqs="CERT_REQUIRED", ca_certs=ca_certs)
    if allowed is not None:
        extra = {"allowed": tuple(allowed)}
        http = type("GuardedHTTPPool", (HTTPConnectionPool,),
                    {"ConnectionCls": type("Conn", (GuardedHTTPConnection,), extra)})
        https = type("GuardedHTTPSPool", (HTTPSConnectionPool,),
                     {"ConnectionCls": type("Conn", (GuardedHTTPSConnection,), extra)})
        manager.pool_classes_by_scheme = {"http": http, "https": https}
    return manager
