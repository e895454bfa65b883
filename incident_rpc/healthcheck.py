"""The container's health check: `python -m incident_rpc.healthcheck` exits 0 when
/readyz answers 200 on the address gunicorn binds (GUNICORN_BIND, else PORT).

It reads the same setting as gunicorn.conf.py, so a PORT or GUNICORN_BIND given
to the container moves the check with the server instead of probing :8000.
"""

import sys
import urllib.request

from incident_rpc.config import Gunicorn


def probe_url(bind: str) -> str:
    """http://host:port/readyz for a gunicorn bind; a wildcard host is probed on loopback."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{port}/readyz"


def main() -> int:
    try:
        with urllib.request.urlopen(probe_url(Gunicorn.BIND), timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:  # refused, timed out, or an HTTP error status (503)
        print(f"not ready: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
