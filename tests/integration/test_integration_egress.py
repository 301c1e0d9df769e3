"""The integration egress guard's connection: DNS rebinding, TLS on the name, refusal before any connect.

The worker's HTTP layer (`SessionPool` with the guarded connections) runs in a child process with a private
/etc/hosts (see `with_hosts`): names resolve through glibc like anywhere else. To play a rebinding DNS
server, the child's audit hook (Python's `sys.addaudithook`, not a patch of our code) rewrites that file the
moment the second address lookup starts, i.e. right after the guard checked the first answer. A guard that
looked the name up again to connect would then reach 127.0.0.2; ours connects to the address it checked.
Every server here listens on 127.0.0.1 or 127.0.0.2, and only 127.0.0.1/32 is allowed.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.http_target import Target, json_reply
from tests.integration_support import with_hosts
from tests.support import ROOT

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
port, tls_port, ca = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
from taskexec.core.netpolicy import parse_networks
from workers.integration.failure import CallFailure
from workers.integration.http import Request, SessionPool

lookups, connects = [], []
def hook(event, args):
    if event == "socket.getaddrinfo":
        lookups.append(str(args[0]))
        if len(lookups) == 2:  # the DNS answer changes right after the guard's lookup
            with open("/etc/hosts", "w") as f:
                f.write("127.0.0.1 localhost\n127.0.0.2 rebind.test\n127.0.0.1 tls.test wrong.test\n")
    elif event == "socket.connect" and isinstance(args[1], tuple):
        connects.append(list(args[1][:2]))
sys.addaudithook(hook)

allowed = parse_networks("127.0.0.1/32")
out = {}
reply = SessionPool(4, allowed=allowed).send(Request("GET", f"http://rebind.test:{port}/x"), (5, 5), 10**6, "x")
out["first"] = {"status": reply.status, "lookups": lookups[:], "connects": connects[:]}
try:  # a new connection now looks the name up again and gets 127.0.0.2: refused before connecting
    SessionPool(4, allowed=allowed).send(Request("GET", f"http://rebind.test:{port}/x"), (5, 5), 10**6, "x")
    out["second"] = "sent"
except CallFailure as f:
    out["second"] = [f.code.value, f.retryable, f.details]
out["connects"] = connects[:]

tls = SessionPool(4, allowed=allowed, ca_certs=ca)
out["tls"] = tls.send(Request("GET", f"https://tls.test:{tls_port}/"), (5, 5), 10**6, "x").status
try:
    tls.send(Request("GET", f"https://wrong.test:{tls_port}/"), (5, 5), 10**6, "x")
    out["wrong_name"] = "accepted"
except CallFailure as f:  # the certificate is for tls.test: the handshake fails, nothing is sent
    out["wrong_name"] = f.code.value == "CONNECTION_ERROR"
print(json.dumps(out))
"""


class Victim:
    """A TCP port on 127.0.0.2 counting the connections it accepts (none may arrive)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.2", port))
        self.sock.listen(8)
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


def make_certs(tmp: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for `tls.test` signed by it (openssl CLI)."""
    def sh(*args: str) -> None:
        subprocess.run(args, cwd=tmp, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-subj", "/CN=taskexec test CA", "-days", "1", "-keyout", "ca.key",
       "-out", "ca.pem")
    sh("openssl", "req", *ec, "-subj", "/CN=tls.test", "-keyout", "leaf.key", "-out", "leaf.csr")
    (tmp / "san.ext").write_text("subjectAltName=DNS:tls.test\n")
    sh("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-days", "1", "-extfile", "san.ext", "-out", "leaf.pem")
    return tmp / "ca.pem", tmp / "leaf.pem", tmp / "leaf.key"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    ca, cert, key = make_certs(tmp_path)
    names: list[str] = []  # the SNI of each handshake

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc,func-returns-value]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1]), ca, names
    server.shutdown()
    server.server_close()


def test_the_connection_goes_to_the_address_that_was_checked(tmp_path: Path,
                                                             tls_server: tuple[int, Path, list[str]]) -> None:
    target = Target()
    victim = Victim(target.port)  # the same port on 127.0.0.2: where a second lookup would lead
    try:
        target.on("/x", json_reply({"ok": True}))
        tls_port, ca, sni = tls_server
        argv = with_hosts({"rebind.test": "127.0.0.1", "tls.test": "127.0.0.1", "wrong.test": "127.0.0.1"},
                          tmp_path, [sys.executable, "-c", CHILD, str(ROOT), str(target.port), str(tls_port),
                                     str(ca)])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        target.close()
        victim.sock.close()

    first = out["first"]
    assert first["status"] == 200, out
    assert first["lookups"] == ["rebind.test", "127.0.0.1"]  # the name once (checked), then the literal
    assert first["connects"] == [["127.0.0.1", target.port]]
    assert [c.headers["host"] for c in target.calls("/x")] == [f"rebind.test:{target.port}"]  # Host: the name
    assert out["second"] == ["DESTINATION_NOT_ALLOWED", False, {"host": "rebind.test", "reason": "loopback"}]
    assert out["connects"] == [["127.0.0.1", target.port]]  # the refused lookup connected nowhere
    assert victim.accepted == 0
    # TLS: connected to the checked address, SNI and certificate verification on the name
    assert out["tls"] == 200 and "tls.test" in sni
    assert out["wrong_name"] is True and "wrong.test" in sni  # the handshake for that name failed: not its certificate
