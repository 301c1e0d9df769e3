"""CycloneDX SBOM of the service image: its Debian packages and the Python distributions of its venv.

    python scripts/image_sbom.py IMAGE OUTPUT.cdx.json [--validate]     (`make sbom` runs it)

Reads the image from the inside (`docker run --rm IMAGE ...`: `dpkg-query` for the packages,
/etc/os-release for the distribution, `importlib.metadata` in /opt/venv for Python), and writes
CycloneDX 1.6 JSON with cyclonedx-python-lib: one component per package with its package URL
(`pkg:deb/debian/<name>@<version>?arch=..&distro=debian-<version>`, `pkg:pypi/<name>@<version>`) and
the operating system as a component, which is what Trivy and Grype match against their advisory
databases. `--validate` checks the output against the CycloneDX schema first (the library's validator
takes about 30 s of CPU, so `make sbom` leaves it to the scanner, which parses the file anyway).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

DPKG_FORMAT = r"${Package}\t${Version}\t${Architecture}\t${db:Status-Abbrev}\n"
PY_LIST = ("import importlib.metadata as m, json; print(json.dumps(sorted({(d.metadata['Name'], d.version) "
           "for d in m.distributions()})))")


def inside(image: str, *command: str) -> str:
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", command[0], image,
                          *command[1:]], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"docker run {image} {' '.join(command)} failed: {out.stderr.strip()[-1000:]}")
    return out.stdout


def debian_packages(image: str) -> list[tuple[str, str, str]]:
    """(name, version, architecture) of every package dpkg has installed ("ii")."""
    rows = []
    for line in inside(image, "dpkg-query", "-W", "-f", DPKG_FORMAT).splitlines():
        name, version, arch, status = line.split("\t")
        if status.strip() == "ii":
            rows.append((name, version, arch))
    return sorted(rows)


def os_release(image: str) -> dict[str, str]:
    fields = {}
    for line in inside(image, "cat", "/etc/os-release", "/etc/debian_version").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value.strip('"')
        elif line.strip():
            fields["DEBIAN_VERSION"] = line.strip()  # 12.8: the point release the advisories name
    return fields


def python_distributions(image: str) -> list[tuple[str, str]]:
    return [tuple(pair) for pair in json.loads(inside(image, "/opt/venv/bin/python", "-c", PY_LIST))]  # type: ignore[misc]


def build(image: str) -> Bom:
    release = os_release(image)
    distro_version = release.get("DEBIAN_VERSION") or release.get("VERSION_ID", "")
    distro = f"{release.get('ID', 'debian')}-{distro_version}"
    bom = Bom()
    bom.metadata.component = Component(name=image, type=ComponentType.CONTAINER, bom_ref=f"image:{image}")
    bom.components.add(Component(name=release.get("ID", "debian"), version=distro_version,
                                 type=ComponentType.OPERATING_SYSTEM, bom_ref=f"os:{distro}",
                                 description=release.get("PRETTY_NAME")))
    for name, version, arch in debian_packages(image):
        purl = PackageURL("deb", release.get("ID", "debian"), name, version, {"arch": arch, "distro": distro})
        bom.components.add(Component(name=name, version=version, type=ComponentType.LIBRARY, purl=purl,
                                     bom_ref=purl.to_string()))
    for name, version in python_distributions(image):
        purl = PackageURL("pypi", None, name.lower().replace("_", "-"), version)
        bom.components.add(Component(name=name, version=version, type=ComponentType.LIBRARY, purl=purl,
                                     bom_ref=purl.to_string()))
    return bom


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--validate"]
    if len(args) != 2:
        raise SystemExit(__doc__)
    image, output = args[0], Path(args[1])
    text = JsonV1Dot6(build(image)).output_as_string(indent=2)
    if "--validate" in sys.argv:
        error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
        if error is not None:
            raise SystemExit(f"the SBOM does not validate: {error}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"{output}: {len(json.loads(text)['components'])} components")


if __name__ == "__main__":
    main()
