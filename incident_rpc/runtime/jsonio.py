"""JSON bodies in and out: the one place that parses requests and encodes answers.

Requests are parsed by the standard library (it tells malformed input apart in the
ways contract section 7 tests), under rules that every dialect shares, so that
whatever passes here can be stored and read back on either database:

- the text is decoded strictly: UTF-8 (or the UTF-16/32 that RFC 8259 once allowed)
  with no encoded surrogates, which `json.loads(bytes)` would let in;
- no string holds a lone UTF-16 surrogate (`"\\ud800"` is valid JSON but not text:
  neither database, nor an UTF-8 encoder, can take it);
- no number is beyond a double (`1e400` would be infinity, which JSON cannot write
  back and PostgreSQL's jsonb cannot store), nor `NaN`/`Infinity`;
- no object repeats a key: a proxy or a log reader that keeps the first of two
  `action`s must not see another command than the one we run (RFC 8259 leaves
  repeated keys to the reader; we refuse them).

Answers are encoded by orjson, an order of magnitude cheaper than `json.dumps` for a
page of incidents (bench/parse.py measures the parse side). What orjson refuses
(integers past 64 bits, possible in echoed input such as a JSON-RPC id) falls back
to the standard library, which writes them as it always did.

`Raw` marks text that is JSON already (a document the database hands over as
text): it goes into the answer as it is, never parsed and encoded again. A
datetime is written as `isoformat()` writes it (schemas.FlatOut leaves some).
"""

import json
import math
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson

from incident_rpc.errors import InvalidJSON

_OPTIONS = orjson.OPT_NON_STR_KEYS  # marshmallow's errors for list items have int keys
Raw = orjson.Fragment
# After a strict decode, an escape is the only way a surrogate gets into a string; a
# body without one (nearly all) needs no look at its strings.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # a pair of escapes decodes to one character


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise InvalidJSON(f"Invalid JSON: the number {literal[:40]} is beyond a double's range")
    return number


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        name = json.dumps(key)[:66]  # ASCII: any odd character comes escaped
        raise InvalidJSON(f"Invalid JSON: the key {name} appears twice in one object")
    return body


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_float=_finite, parse_constant=_reject_constant
)


def parse(raw: bytes | str) -> Any:
    """A request body as JSON; InvalidJSON, naming the rule it breaks, for anything
    that is not JSON or not JSON we can keep. A str (a WebSocket text message) must
    have been decoded strictly, as wsproto does."""
    try:
        text = raw if isinstance(raw, str) else raw.decode(json.detect_encoding(raw))
        body = _DECODER.decode(text)
    except (ValueError, RecursionError) as error:  # includes bad UTF-8 and huge numbers
        raise InvalidJSON() from error
    if _SURROGATE_ESCAPE.search(text) and any(map(_SURROGATE.search, strings(body))):
        raise InvalidJSON(
            "Invalid JSON: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
            "which is not text"
        )
    return body


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, keys included (no recursion: the value may
    be nested as deep as the parser allows)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


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
