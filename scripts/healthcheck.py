"""Container health check for the taskexec image (stdlib only, no curl in the image).

    python /opt/taskexec/healthcheck.py

TEL_HEALTHCHECK_FILE (takes precedence) checks that a file is being written:
  a path or glob   healthy if the newest matching file changed within TEL_HEALTHCHECK_MAX_AGE seconds
                   (default 600). The scheduler: its beat schedule file, which `taskexec beat` rewrites
                   at least every 3 minutes while it sends periodic jobs.
TEL_HEALTHCHECK_URL picks what is checked otherwise:
  unset      http://127.0.0.1:${TEL_PORT:-8081}/health  (the router)
  "none"     always healthy (one-shot jobs: their liveness is the process)
  any URL    GET it; healthy on HTTP 2xx within 4 s (worker pools: http://127.0.0.1:9540/health)
"""

import glob
import os
import ssl
import sys
import time
import urllib.request


def check_file(pattern: str, max_age: float) -> int:
    mtimes = [os.path.getmtime(p) for p in glob.glob(pattern)]
    if not mtimes:
        print(f"unhealthy: no file matches {pattern}", file=sys.stderr)
        return 1
    age = time.time() - max(mtimes)
    if age > max_age:
        print(f"unhealthy: {pattern} last written {age:.0f}s ago (> {max_age:.0f}s)", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    pattern = os.environ.get("TEL_HEALTHCHECK_FILE", "").strip()
    if pattern:
        return check_file(pattern, float(os.environ.get("TEL_HEALTHCHECK_MAX_AGE") or 600))
    url = os.environ.get("TEL_HEALTHCHECK_URL")
    if url is None:
        scheme = "https" if os.environ.get("TEL_TLS_CERT_FILE") else "http"  # the router serving HTTPS itself
        url = f"{scheme}://127.0.0.1:{os.environ.get('TEL_PORT', '8081')}/health"
    if url.strip().lower() in ("", "none", "off"):
        return 0
    context = None
    if url.startswith("https://127.0.0.1:"):  # our own process: its certificate names the service, not 127.0.0.1
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as resp:  # noqa: S310 - local health URL
            return 0 if 200 <= resp.status < 300 else 1
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
