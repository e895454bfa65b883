"""API keys for monitoring agents: create (shown once), list, revoke. Admins only.

The key format, hashing and lookup live in `incident_rpc.keys`.
"""

from typing import Any

from sqlalchemy import select

from incident_rpc.access import keys
from incident_rpc.dispatch.registry import Context, action
from incident_rpc.errors import NotFound
from incident_rpc.extensions import db
from incident_rpc.models import ApiKey, Role, utcnow
from incident_rpc.schemas.fields import identifier
from incident_rpc.schemas.incidents import Params
from incident_rpc.schemas.teams import KeyCreateParams, NoParams, key_out, keys_out, new_key_out


class KeyIdParams(Params):
    id = identifier(required=True)


@action("key_create", params=KeyCreateParams(), role=Role.admin, output=new_key_out, status=201)
def key_create(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """A new key; the answer is the only place the key itself ever appears."""
    key, prefix, digest = keys.new_key()
    row = ApiKey(
        name=params["name"], role=params["role"], prefix=prefix, key_hash=digest,
        created_by=ctx.actor, created_at=utcnow(),
    )  # fmt: skip
    db.session.add(row)
    db.session.flush()
    return {"id": row.id, "name": row.name, "role": row.role, "prefix": prefix, "key": key}


@action("key_list", params=NoParams(), role=Role.admin, output=keys_out, reads_only=True)
def key_list(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(db.session.scalars(select(ApiKey).order_by(ApiKey.id)))}


@action("key_revoke", params=KeyIdParams(), role=Role.admin, output=key_out, revokes=True)
def key_revoke(ctx: Context, params: dict[str, Any]) -> ApiKey:
    """The key fails from the next request on, in every worker once this commits
    (access/revocations.py); revoking it again changes nothing."""
    row = db.session.get(ApiKey, params["id"])
    if row is None:
        raise NotFound(f"no API key with id {params['id']}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
