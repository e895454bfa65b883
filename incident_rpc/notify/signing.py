"""Standard Webhooks signing: secrets, the headers of one attempt, masks for answers.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is
`v1,` + base64(HMAC-SHA256(key, content)), where the secret shown to the admin is
`whsec_` + base64(key). See https://www.standardwebhooks.com/.
"""

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
KEY_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }


def mask(secret: str, keep: int = 4) -> str:
    """Enough of a secret to tell two apart, never enough to use: `whsec_AbCd...`."""
    head = SECRET_PREFIX if secret.startswith(SECRET_PREFIX) else ""
    return head + secret[len(head) : len(head) + keep] + "..."


def mask_url(url: str) -> str:
    """A URL that is itself a secret (Slack's): scheme and host only."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/..."
