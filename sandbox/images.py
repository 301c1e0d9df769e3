"""Building the sandbox runtime images without any image registry.

The images are a Debian ``minbase`` root filesystem with ``python3-minimal``, made by
``debootstrap`` and loaded with ``docker import``. Both runtimes (python, shell) use the
same root filesystem, tagged under two names. The in-container harness is *not* baked in:
it is passed on the command line of every container (see :mod:`sandbox.harness`), so a
harness change never needs an image rebuild.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable

import docker
import docker.errors

from sandbox.errors import ImageBuildError, SandboxUnavailable

DEFAULT_IMAGES: dict[str, str] = {
    "python": "taskexec-sandbox-python:1",
    "shell": "taskexec-sandbox-shell:1",
}

SANDBOX_UID = 10001
# The Debian release and mirror debootstrap builds from (the caller's settings: TEL_SANDBOX_SUITE/_MIRROR).
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Dropped from the root filesystem to keep the image small; none are needed at run time.
_PRUNE = ["var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
          "usr/share/info", "usr/share/locale", "var/log"]


def _client(docker_client: docker.DockerClient | None) -> docker.DockerClient:
    if docker_client is not None:
        return docker_client
    try:
        return docker.from_env(timeout=120)
    except docker.errors.DockerException as exc:
        raise SandboxUnavailable(f"Docker engine unreachable: {exc}") from exc


def image_exists(client: docker.DockerClient, name: str) -> bool:
    """Return True when ``name`` is present in the local engine."""
    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def split_name(name: str) -> tuple[str, str]:
    """Split ``repo:tag`` (tag defaults to ``latest``)."""
    if ":" in name.split("/")[-1]:
        repo, _, tag = name.rpartition(":")
        return repo, tag
    return name, "latest"


def _customise_rootfs(root: str) -> None:
    """Add the unprivileged user, the task directories and trim the tree."""
    with open(os.path.join(root, "etc/passwd"), "a") as f:
        f.write(f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/tmp:/usr/sbin/nologin\n")
    with open(os.path.join(root, "etc/group"), "a") as f:
        f.write(f"sandbox:x:{SANDBOX_UID}:\n")
    for d in ("task", "task/output"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
        os.chmod(os.path.join(root, d), 0o1777)
    for rel in _PRUNE:
        path = os.path.join(root, rel)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path, exist_ok=True)


def build_rootfs(root: str, log: Callable[[str], None] = print, suite: str = DEFAULT_SUITE,
                 mirror: str = DEFAULT_MIRROR) -> None:
    """Run debootstrap into ``root`` and customise the result."""
    if os.geteuid() != 0:
        raise ImageBuildError("building the sandbox image with debootstrap needs root")
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed (apt-get install debootstrap)")
    cmd = ["debootstrap", "--variant=minbase", "--include=python3-minimal,libpython3-stdlib",
           suite, root, mirror]
    log("sandbox: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageBuildError(f"debootstrap failed ({proc.returncode}): {proc.stderr[-2000:]}")
    _customise_rootfs(root)


def _import(client: docker.DockerClient, root: str, name: str, workdir: str) -> str:
    tar_path = os.path.join(workdir, "rootfs.tar")
    subprocess.run(["tar", "-C", root, "--numeric-owner", "-cf", tar_path, "."], check=True)
    repo, tag = split_name(name)
    changes = [f"USER {SANDBOX_UID}", "WORKDIR /task",
               "ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8",
               'CMD ["/usr/bin/python3"]', "LABEL taskexec.sandbox=1"]
    client.api.import_image_from_file(tar_path, repository=repo, tag=tag, changes=changes)
    return name


def build_images(images: dict[str, str] | None = None, force: bool = False,
                 log: Callable[[str], None] = print,
                 docker_client: docker.DockerClient | None = None, suite: str = DEFAULT_SUITE,
                 mirror: str = DEFAULT_MIRROR) -> dict[str, str]:
    """Build the runtime images that are missing (all of them when ``force``).

    Idempotent: existing images are kept unless ``force``. Returns ``{runtime: image}``.
    """
    images = dict(images or DEFAULT_IMAGES)
    client = _client(docker_client)
    missing = [n for n in dict.fromkeys(images.values()) if force or not image_exists(client, n)]
    if not missing:
        log("sandbox: images present: " + ", ".join(sorted(set(images.values()))))
        return images
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="taskexec-rootfs-") as workdir:
        root = os.path.join(workdir, "root")
        build_rootfs(root, log, suite, mirror)
        first = _import(client, root, missing[0], workdir)
        log(f"sandbox: imported {first}")
        for name in missing[1:]:
            repo, tag = split_name(name)
            client.images.get(first).tag(repo, tag)
            log(f"sandbox: tagged {name}")
    log(f"sandbox: image build took {time.monotonic() - started:.1f}s")
    return images
