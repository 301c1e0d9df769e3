"""A private Docker engine for the fault tests: its own dockerd, managed containerd, state and socket.

The system engine serves everybody's tests and is never touched. The private daemon has its own
`--data-root`, `--exec-root` (where its managed containerd puts its socket and state), pid file, API
socket and containerd namespaces, no bridge and no iptables rules (sandbox containers run with network
`none`). `restart()` stops it with SIGTERM (as `systemctl restart docker` does: running containers get
SIGTERM, then SIGKILL after their 10 s stop timeout) and starts it again on the same data root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import docker
import docker.errors

from tests.support import wait_for


class PrivateDockerd:
    """One dockerd child process; `host` is its DOCKER_HOST."""

    def __init__(self) -> None:
        # Short paths: containerd's and the shims' unix sockets live under the exec root (108-byte limit).
        self.base = Path(tempfile.mkdtemp(prefix="txd-", dir="/tmp"))
        self.data, self.exec_root = self.base / "data", self.base / "x"
        self.pidfile, self.sock, self.logfile = self.base / "docker.pid", self.base / "docker.sock", self.base / "log"
        self.host = f"unix://{self.sock}"
        self.namespace = "taskexec-faults-" + uuid.uuid4().hex[:8]
        # A bridge of its own: with `--bridge none` dockerd deletes the host's `docker0`, which would take
        # the system engine's default network (and `docker build`) away from everyone else.
        self.bridge = "txb" + uuid.uuid4().hex[:8]
        self.popen: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._clients: list[docker.DockerClient] = []

    def args(self) -> list[str]:
        return ["dockerd", "--data-root", str(self.data), "--exec-root", str(self.exec_root),
                "--pidfile", str(self.pidfile), "-H", self.host,
                "--containerd-namespace", self.namespace, "--containerd-plugins-namespace", self.namespace + "-p",
                "--bridge", self.bridge, "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                "--storage-driver", "overlay2", "--log-level", "info"]

    def start(self, timeout: float = 60) -> None:
        assert shutil.which("dockerd"), "dockerd missing: run scripts/bootstrap.sh"
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", "10.213.0.1/24", "dev", self.bridge], check=True)
        with open(self.logfile, "ab") as log:
            self.popen = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        wait_for(self.up, timeout, interval=0.2, what=f"private dockerd at {self.sock}")

    def up(self) -> bool:
        if self.popen is None or self.popen.poll() is not None:
            return False
        # `GET /_ping` on the API socket by hand: a DockerClient asks for the server's version in its constructor,
        # and when that fails (a daemon still starting) its half-made session is left to the garbage collector.
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(3)
                probe.connect(str(self.sock))
                probe.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                answer = b""
                while chunk := probe.recv(4096):
                    answer += chunk
            return answer.startswith(b"HTTP/1.") and answer.split(b" ", 2)[1] == b"200" and answer.endswith(b"OK")
        except OSError:
            return False

    def client(self, timeout: int = 60) -> docker.DockerClient:
        """A client of this engine, closed by `close_clients()` (the `dockerd` fixture calls it after each test)."""
        client = docker.DockerClient(base_url=self.host, timeout=timeout)
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        while self._clients:
            self._clients.pop().close()

    def stop(self, timeout: float = 90) -> float:
        """SIGTERM and wait for the daemon (and its containerd) to exit; returns how long it took."""
        started = time.monotonic()
        if self.popen is None or self.popen.poll() is not None:
            return 0.0
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        return time.monotonic() - started

    def restart(self) -> float:
        """Stop (SIGTERM, wait) and start again with the same data root; returns the seconds it was down."""
        down = self.stop()
        self.start()
        self.restarts += 1
        return down

    def load_images(self, names: list[str]) -> None:
        """Copy images from the system engine (`docker save | docker load`): no registry needed."""
        save = subprocess.Popen(["docker", "save", *names], stdout=subprocess.PIPE,
                                env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"})
        load = subprocess.run(["docker", "load"], stdin=save.stdout, capture_output=True, text=True,
                              env={**os.environ, "DOCKER_HOST": self.host}, timeout=300, check=False)
        assert save.stdout is not None
        save.stdout.close()
        assert save.wait(timeout=60) == 0 and load.returncode == 0, load.stderr

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def _leftover_pids(self) -> list[int]:
        """Processes still naming our directory (a containerd or shim of a daemon that was SIGKILLed)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if str(self.base).encode() in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
        return pids

    def destroy(self) -> None:
        """Stop the daemon and remove everything it left: processes, mounts, directories."""
        self.close_clients()
        with contextlib.suppress(Exception):
            self.stop()
        for pid in self._leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.base))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", self.bridge], check=False, capture_output=True)
