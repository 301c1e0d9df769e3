"""Reading a container's multiplexed attach stream up to the harness end markers.

Docker multiplexes stdout/stderr as frames ``[stream, 0, 0, 0, size(4 BE)] + payload``. The
reader counts the user's bytes (stdout+stderr together, against the output cap), keeps a
tail of each stream, and stops at the harness markers ``\\0TXEND:<nonce>`` (stdout) and
``\\0TXEND:<nonce>:<record JSON>\\n`` (stderr). It never blocks longer than asked, so the
caller can check its deadline and cancel event between calls.
"""

from __future__ import annotations

import json
import select
import struct
from typing import Any

_HEADER = 8


class _Stream:
    """One demultiplexed stream: marker search, tail and byte count."""

    def __init__(self, marker: bytes, tail_bytes: int) -> None:
        self.marker = marker
        self.tail_bytes = tail_bytes
        self.pending = bytearray()
        self.tail = bytearray()
        self.count = 0
        self.found = False
        self.after = bytearray()  # bytes after the marker

    def feed(self, data: bytes) -> None:
        if self.found:
            self.after += data
            return
        self.pending += data
        idx = self.pending.find(self.marker)
        if idx >= 0:
            self._emit(bytes(self.pending[:idx]))
            self.after += self.pending[idx + len(self.marker):]
            self.pending.clear()
            self.found = True
            return
        keep = len(self.marker) - 1
        if len(self.pending) > keep:
            cut = len(self.pending) - keep
            self._emit(bytes(self.pending[:cut]))
            del self.pending[:cut]

    def flush(self) -> None:
        if not self.found and self.pending:
            self._emit(bytes(self.pending))
            self.pending.clear()

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self.count += len(data)
        self.tail += data
        if len(self.tail) > 2 * self.tail_bytes:
            del self.tail[: len(self.tail) - self.tail_bytes]

    def text(self) -> str:
        return bytes(self.tail[-self.tail_bytes:]).decode("utf-8", errors="replace")


class AttachReader:
    """Incremental reader of one attach socket for one job."""

    def __init__(self, sock: Any, nonce: str, output_cap: int, tail_bytes: int) -> None:
        self.sock = sock
        marker = b"\x00TXEND:" + nonce.encode()
        self.out = _Stream(marker + b"\n", tail_bytes)
        self.err = _Stream(marker + b":", tail_bytes)
        self.output_cap = output_cap
        self.buf = bytearray()
        self.eof = False
        self.record: dict[str, Any] | None = None

    @property
    def user_bytes(self) -> int:
        return self.out.count + self.err.count

    @property
    def over_cap(self) -> bool:
        return self.user_bytes > self.output_cap

    @property
    def done(self) -> bool:
        return self.eof or self.over_cap or (self.out.found and self.record is not None)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def pump(self, timeout: float) -> None:
        """Read whatever arrives within ``timeout`` seconds (at most a few MiB)."""
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        if not ready:
            return
        for _ in range(64):
            try:
                chunk = self.sock.recv(256 * 1024)
            except (TimeoutError, BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._finish()
                return
            self.buf += chunk
            self._parse()
            if self.done:
                return
            ready, _, _ = select.select([self.sock], [], [], 0)
            if not ready:
                break

    def _parse(self) -> None:
        while len(self.buf) >= _HEADER:
            kind = self.buf[0]
            size = struct.unpack(">I", self.buf[4:8])[0]
            if len(self.buf) < _HEADER + size:
                return
            payload = bytes(self.buf[_HEADER:_HEADER + size])
            del self.buf[:_HEADER + size]
            if kind == 1:
                self.out.feed(payload)
            elif kind == 2:
                self.err.feed(payload)
                self._check_record()

    def _check_record(self) -> None:
        if self.record is None and self.err.found and b"\n" in self.err.after:
            line = bytes(self.err.after.split(b"\n", 1)[0])
            try:
                self.record = json.loads(line.decode("utf-8"))
            except ValueError:
                self.record = {"corrupt": True}

    def _finish(self) -> None:
        self.eof = True
        self.out.flush()
        self.err.flush()

    def tails(self) -> tuple[str, str]:
        return self.out.text(), self.err.text()
