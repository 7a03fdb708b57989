"""Decode (and encode) SQLite's binary JSON format, JSONB.

SQLite 3.45 added JSONB (https://sqlite.org/jsonb.html), a BLOB encoding of
JSON, and other clients of our databases (the TypeScript framework Mastra)
store JSON columns that way. The SQLite linked into our Python (3.40) predates
JSONB: its json functions reject those blobs. So we decode JSONB here, and
``jsonb_to_json_text`` is registered on every connection as an SQL function
that turns either representation into JSON text the old json functions accept.

Every element is a header followed by a payload. The header's first byte
holds the element type in its low nibble and the payload size in its high
nibble: 0-11 is the size itself, 12/13/14/15 mean the size follows as a
1/2/4/8-byte big-endian integer. Number and string payloads are their JSON
(or JSON5) text; array and object payloads are their elements back to back,
an object's alternating key and value.
"""

from __future__ import annotations

import json
import math
import re
from json.decoder import scanstring
from typing import Any

__all__ = ["decode_jsonb", "encode_jsonb", "is_jsonb", "jsonb_to_json_text"]

# Element types (low nibble of the header byte); 13-15 are reserved.
NULL, TRUE, FALSE, INT, INT5, FLOAT, FLOAT5 = range(7)
TEXT, TEXTJ, TEXT5, TEXTRAW, ARRAY, OBJECT = range(7, 13)

_CONSTANTS = (None, True, False)
_CONSTANT_BYTES = {None: b"\x00", True: b"\x01", False: b"\x02"}
_INT = re.compile(rb"-?[0-9]+")
_INT5 = re.compile(rb"[+-]?(?:0[xX][0-9a-fA-F]+|[0-9]+)")
_FLOAT = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_FLOAT5 = re.compile(rb"[+-]?(?:Infinity|NaN|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")

# One backslash escape: a surrogate pair, \uXXXX, \xXX, or a single character
# (CRLF counts as one, for JSON5 line continuations; \Z catches a lone
# trailing backslash).
_ESCAPE = re.compile(
    r"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
    r"|u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})|(\r\n|.|\Z))",
    re.DOTALL,
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SIMPLE_ESCAPES = {
    '"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
    # JSON5 additions; an escaped line terminator is a line continuation.
    "'": "'", "v": "\v", "0": "\0",
    "\n": "", "\r": "", "\r\n": "", "\u2028": "", "\u2029": "",
}


def _unescape_one(match: re.Match[str]) -> str:
    high, low, code, byte, char = match.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)
    if code is not None or byte is not None:
        value = int(code or byte, 16)
        # A lone surrogate cannot be encoded as UTF-8 (sqlite3 would fail on it).
        return "\ufffd" if 0xD800 <= value <= 0xDFFF else chr(value)
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char]
    if not char or char in "ux123456789":
        raise ValueError(f"invalid escape in JSONB text: {match.group()!r}")
    return char  # JSON5: any other escaped character stands for itself


def _unescape(text: str) -> str:
    """Resolve the JSON and JSON5 backslash escapes in ``text``."""
    try:  # fast path (C) for plain RFC 8259 escapes
        result, stop = scanstring(text + '"', 0, False)
        if stop == len(text) + 1 and not _SURROGATE.search(result):
            return result
    except ValueError:
        pass
    return _ESCAPE.sub(_unescape_one, text)


def _decode(buf: bytes, pos: int, end: int) -> tuple[Any, int]:
    """Decode the element starting at ``pos``, which must end by ``end``.

    Returns the value and the offset just past the element.
    """
    if pos >= end:
        raise ValueError(f"truncated JSONB: no element header at offset {pos}")
    head = buf[pos]
    kind, size = head & 0x0F, head >> 4
    if kind > OBJECT:
        raise ValueError(f"reserved JSONB element type {kind} at offset {pos}")
    pos += 1
    if size >= 12:
        width = 1 << (size - 12)
        if pos + width > end:
            raise ValueError(f"truncated JSONB: size field at offset {pos}")
        size = int.from_bytes(buf[pos : pos + width], "big")
        pos += width
    stop = pos + size
    if stop > end:
        raise ValueError(f"truncated JSONB: payload of {size} bytes at offset {pos}")

    if kind <= FALSE:
        if size:
            raise ValueError(f"JSONB null/true/false with a payload at offset {pos}")
        return _CONSTANTS[kind], stop
    if kind == ARRAY:
        items = []
        while pos < stop:
            item, pos = _decode(buf, pos, stop)
            items.append(item)
        return items, stop
    if kind == OBJECT:
        obj = {}
        while pos < stop:
            if not TEXT <= buf[pos] & 0x0F <= TEXTRAW:
                raise ValueError(f"JSONB object key is not text at offset {pos}")
            key, pos = _decode(buf, pos, stop)
            if pos >= stop:
                raise ValueError("JSONB object key without a value")
            obj[key], pos = _decode(buf, pos, stop)
        return obj, stop

    payload = buf[pos:stop]
    if kind == TEXT or kind == TEXTRAW:
        return payload.decode("utf-8"), stop
    if kind == TEXTJ or kind == TEXT5:
        text = payload.decode("utf-8")
        return (_unescape(text) if "\\" in text else text), stop
    if kind == INT and _INT.fullmatch(payload):
        return int(payload), stop
    if kind == INT5 and _INT5.fullmatch(payload):
        return int(payload, 16 if b"x" in payload.lower() else 10), stop
    if (kind == FLOAT and _FLOAT.fullmatch(payload)) or (kind == FLOAT5 and _FLOAT5.fullmatch(payload)):
        return float(payload), stop
    raise ValueError(f"malformed JSONB number {payload!r} at offset {pos}")


def decode_jsonb(blob: bytes) -> Any:
    """Decode one JSONB element into dict/list/str/int/float/bool/None.

    JSON5 forms are accepted (hex and ``+`` integers, ``.5``/``5.``,
    ``Infinity``/``NaN`` -> ``float('inf')``/``float('nan')``, JSON5 string
    escapes). A lone ``\\uD800``-style surrogate escape decodes to U+FFFD.
    Raises ``ValueError`` on malformed input: truncation, reserved types,
    trailing bytes, non-text object keys, bad numbers/escapes, invalid UTF-8,
    or nesting deeper than Python's recursion limit.
    """
    if not isinstance(blob, bytes):
        blob = bytes(memoryview(blob))  # bytearray/memoryview; TypeError for non-buffers
    try:
        value, pos = _decode(blob, 0, len(blob))
    except RecursionError:
        raise ValueError("JSONB nested too deeply") from None
    if pos != len(blob):
        raise ValueError(f"trailing bytes after JSONB element at offset {pos}")
    return value


def is_jsonb(value: bytes) -> bool:
    """Return whether ``value`` is one well-formed JSONB element (decodes fully)."""
    try:
        decode_jsonb(value)
    except (ValueError, TypeError):
        return False
    return True


def _nonfinite_to_json(obj: Any) -> str:
    """Compact JSON for ``obj`` with NaN as null and +/-inf as +/-9e999, as SQLite renders them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "null" if obj != obj else ("9e999" if obj > 0 else "-9e999")
    if isinstance(obj, list):
        return "[" + ",".join(map(_nonfinite_to_json, obj)) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(_to_json(k) + ":" + _nonfinite_to_json(v) for k, v in obj.items()) + "}"
    return json.dumps(obj, ensure_ascii=False)


def _to_json(obj: Any) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN/Infinity are not JSON; SQLite 3.40's json functions reject them
        return _nonfinite_to_json(obj)


def jsonb_to_json_text(value: Any) -> str | None:
    """SQL function body (registered e.g. as ``cs_json``): any JSON column value as JSON text.

    ``bytes`` holding JSONB -> compact JSON text; ``str`` -> unchanged;
    ``None`` -> ``None``; ``int``/``float`` -> their JSON text (non-finite
    floats as SQLite writes them: ``9e999``, ``-9e999``, ``null``). A blob
    that is not valid JSONB gives ``None``: this never raises, so SQL
    conditions using it cannot fail.
    """
    if value is None or isinstance(value, str):
        return value
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _to_json(decode_jsonb(value))
        if isinstance(value, (int, float)):
            return _to_json(value)
    except (ValueError, RecursionError):
        pass
    return None


def _element(kind: int, payload: bytes) -> bytes:
    """Header (smallest size encoding) plus payload."""
    size = len(payload)
    if size <= 11:
        return bytes((size << 4 | kind,)) + payload
    for code, width in ((12, 1), (13, 2), (14, 4), (15, 8)):
        if size < 1 << (8 * width):
            return bytes((code << 4 | kind,)) + size.to_bytes(width, "big") + payload
    raise ValueError("JSONB payload too large")


def encode_jsonb(obj: Any) -> bytes:
    """Encode dict/list/tuple/str/int/float/bool/None as JSONB.

    Produces what SQLite's ``jsonb(json_text)`` yields for the JSON text of
    ``obj``: smallest headers, INT/FLOAT with the number's JSON text, TEXT for
    strings needing no JSON escapes, else TEXTJ holding the escaped text.
    NaN becomes null and +/-inf FLOAT ``9e999``/``-9e999``, as SQLite does
    with JSON5 ``NaN``/``Infinity``. Object keys must be ``str``; other
    types raise ``TypeError``.
    """
    if obj is None or obj is True or obj is False:
        return _CONSTANT_BYTES[obj]
    if isinstance(obj, int):
        return _element(INT, int.__repr__(obj).encode("ascii"))
    if isinstance(obj, float):
        if obj != obj:
            return _CONSTANT_BYTES[None]
        if math.isinf(obj):
            return _element(FLOAT, b"9e999" if obj > 0 else b"-9e999")
        return _element(FLOAT, float.__repr__(obj).encode("ascii"))
    if isinstance(obj, str):
        escaped = json.dumps(obj, ensure_ascii=False)[1:-1]
        return _element(TEXT if escaped == obj else TEXTJ, escaped.encode("utf-8"))
    if isinstance(obj, (list, tuple)):
        return _element(ARRAY, b"".join(map(encode_jsonb, obj)))
    if isinstance(obj, dict):
        parts = []
        for key, val in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"JSONB object keys must be str, not {type(key).__name__}")
            parts += (encode_jsonb(key), encode_jsonb(val))
        return _element(OBJECT, b"".join(parts))
    raise TypeError(f"cannot encode {type(obj).__name__} as JSONB")
