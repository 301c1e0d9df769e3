"""Container health check for the taskexec image (stdlib only, no curl in the image).

    python /opt/taskexec/healthcheck.py

TEL_HEALTHCHECK_URL picks what is checked:
  unset      http://127.0.0.1:${TEL_PORT:-8081}/health  (the router)
  "none"     always healthy (workers, scheduler, one-shot jobs: their liveness is the process)
  any URL    GET it; healthy on HTTP 2xx within 4 s
"""

import os
import sys
import urllib.request


def main() -> int:
    url = os.environ.get("TEL_HEALTHCHECK_URL")
    if url is None:
        url = f"http://127.0.0.1:{os.environ.get('TEL_PORT', '8081')}/health"
    if url.strip().lower() in ("", "none", "off"):
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:  # noqa: S310 - local health URL
            return 0 if 200 <= resp.status < 300 else 1
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
