"""JSON bodies in and out: the one place that parses requests and encodes answers.

Requests are parsed by the standard library (it tells malformed input apart in the
ways contract section 7 tests). Answers are encoded by orjson: a page of 50
incidents takes about 15 us instead of about 200 us with `json.dumps`, which was
a tenth of a `get_all` request's CPU. What orjson refuses (integers past 64 bits,
strings with lone surrogates, both possible in echoed input such as a JSON-RPC
id) falls back to the standard library, which writes them as it always did.

`Raw` marks text that is JSON already (a document the database hands over as
text): it goes into the answer as it is, never parsed and encoded again. A
datetime is written as `isoformat()` writes it (schemas.FlatOut leaves some).
"""

import json
from datetime import datetime
from typing import Any

import orjson

from .errors import InvalidJSON

_OPTIONS = orjson.OPT_NON_STR_KEYS  # marshmallow's errors for list items have int keys
Raw = orjson.Fragment


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:  # includes bad UTF-8 and huge numbers
        raise InvalidJSON() from error


def encode(body: Any) -> bytes:
    try:
        return orjson.dumps(body, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(body, default=_plain).encode()


def _plain(value: Any) -> Any:
    """What the standard library cannot encode, as it can."""
    if isinstance(value, Raw):
        return json.loads(value.contents)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")
