"""``python -m sandbox build-image [--force]``: build the sandbox runtime images."""

from __future__ import annotations

import argparse
import sys

from sandbox.errors import ImageBuildError, SandboxUnavailable
from sandbox.images import DEFAULT_MIRROR, DEFAULT_SUITE, build_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-image", help="build the runtime images (debootstrap + docker import)")
    build.add_argument("--force", action="store_true", help="rebuild even if the images exist")
    build.add_argument("--suite", default=DEFAULT_SUITE, help="Debian release to debootstrap")
    build.add_argument("--mirror", default=DEFAULT_MIRROR, help="Debian mirror to debootstrap from")
    args = parser.parse_args(argv)
    if args.command == "build-image":
        try:
            images = build_images(force=args.force, suite=args.suite, mirror=args.mirror)
        except (ImageBuildError, SandboxUnavailable) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for runtime, image in sorted(images.items()):
            print(f"{runtime}: {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
