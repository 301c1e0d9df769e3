"""`make sbom`: CycloneDX SBOMs of the Python environment and of the service image list what is installed.

The image is built offline as tests/e2e/test_image.py builds it (same tag, so Docker's cache serves
both). What the SBOMs must list is read independently: `importlib.metadata` of this interpreter (the
project's .venv) and, inside the image, `dpkg-query` and /opt/venv's distributions. No advisory
database is reachable here, so no scanner runs; docs/security.md shows the CI step that would.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]
IMAGE = "taskexec:test"


def components(bom: dict[str, Any], purl_type: str) -> set[tuple[str, str]]:
    return {(c["name"].lower().replace("_", "-"), c["version"]) for c in bom["components"]
            if c.get("purl", "").startswith(f"pkg:{purl_type}/")}


@pytest.mark.timeout(2400)
def test_make_sbom_lists_what_is_installed(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    out = subprocess.run(["make", "--no-print-directory", "sbom", f"SBOM_DIR={tmp_path}", f"SBOM_IMAGE={IMAGE}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=2300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]

    python = json.loads((tmp_path / "python-environment.cdx.json").read_text())
    assert python["bomFormat"] == "CycloneDX" and python["specVersion"] == "1.6"
    assert python["metadata"]["component"]["name"] == "taskexec"
    installed = {(d.metadata["Name"].lower().replace("_", "-"), d.version)
                 for d in importlib.metadata.distributions()} - {("taskexec", importlib.metadata.version("taskexec"))}
    assert components(python, "pypi") == installed

    image = json.loads((tmp_path / "image.cdx.json").read_text())
    assert image["bomFormat"] == "CycloneDX" and image["specVersion"] == "1.6"
    assert image["metadata"]["component"] == {"bom-ref": f"image:{IMAGE}", "name": IMAGE, "type": "container"}
    fmt = "${db:Status-Abbrev} ${Package} ${Version}\\n"
    dpkg = docker_client.containers.run(IMAGE, ["dpkg-query", "-W", "-f", fmt], remove=True,
                                        network_mode="none").decode().split("\n")
    debs = {(name, version) for status, name, version in (line.split() for line in dpkg if line) if status == "ii"}
    assert len(debs) > 50 and any(name == "postgresql-client-15" for name, _ in debs)
    assert components(image, "deb") == debs
    py = docker_client.containers.run(IMAGE, ["/opt/venv/bin/python", "-c", "import importlib.metadata as m; "
                                              "print('\\n'.join(d.metadata['Name'] + ' ' + d.version "
                                              "for d in m.distributions()))"], remove=True).decode()
    in_image = {(n.lower().replace("_", "-"), v) for n, v in (line.split(" ") for line in py.splitlines() if line)}
    assert {"taskexec", "celery", "flask", "boto3"} <= {n for n, _ in in_image}
    assert components(image, "pypi") == in_image
    os_component = [c for c in image["components"] if c["type"] == "operating-system"]
    assert len(os_component) == 1 and os_component[0]["name"] == "debian"
    assert os_component[0]["version"].startswith("12")  # bookworm, with its point release
    for component in image["components"]:
        if component["type"] != "operating-system":
            assert "distro=debian-12" in component["purl"] or component["purl"].startswith("pkg:pypi/")
