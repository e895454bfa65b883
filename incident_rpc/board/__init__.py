"""The operator board (`GET /`) and the browsable API reference (`GET /docs`,
`GET /openrpc.json`): static pages shipped in the package, speaking only the public
API (`/rpc`, `/ws`) from the browser. Nothing is rendered on the server and nothing
is fetched from elsewhere, so the pages work on an air-gapped network.

pages.py has the routes, headers.py the security headers (a strict
Content-Security-Policy, no framing, no sniffing), cors.py the CORS_ORIGINS setting;
static/ the HTML, CSS and ES modules.
"""
