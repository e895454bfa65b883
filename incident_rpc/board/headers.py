"""The security headers of the board's and the docs' responses.

The policy allows scripts, styles and images from this origin only (no inline
script or style, no eval), connections to this origin over HTTP and WebSocket,
no plugins, no framing, no base-URL games; the browser must trust the declared
content types. Server strings never reach the page as HTML (the scripts insert
text only), so this is the second wall, not the first.
"""

from flask import Response, request


def policy(host: str) -> str:
    """`connect-src 'self'` covers ws: only in browsers that implement CSP 3's rule for
    it, so this origin's ws:/wss: addresses are named as well."""
    sources = {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "connect-src": f"'self' ws://{host} wss://{host}",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
        "object-src": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in sources.items())


def protect(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = policy(request.host)
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    return response
