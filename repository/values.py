"""Value handling shared by every domain and backend: ``UNSET``, timestamps and JSON values."""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterator, Sequence

from .jsonb import decode_jsonb

UTC = timezone.utc


class _Unset:
    """Type of :data:`UNSET`: an argument that was not given."""

    _instance = None

    def __new__(cls) -> "_Unset":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"


#: Sentinel of update methods: a parameter left at ``UNSET`` keeps the stored value.
UNSET: Any = _Unset()


# --------------------------------------------------------------------------- timestamps

_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)


def truncate_ms(value: datetime) -> datetime:
    """Drop sub-millisecond digits (truncation, never rounding)."""
    extra = value.microsecond % 1000
    return value.replace(microsecond=value.microsecond - extra) if extra else value


def utc_now() -> datetime:
    """One clock reading, UTC, millisecond precision."""
    return truncate_ms(datetime.now(UTC))


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 timestamp (also ``YYYY-MM-DD HH:MM:SS[.fff]``); no offset means UTC.

    Raises ``ValueError`` when the text is not a timestamp.
    """
    if len(text) == 24 and text[10] == "T" and text[19] == "." and text[23] == "Z":
        # The stored form (every SQLite read): the C parser is ~25x faster than the pattern below.
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass  # the pattern below gives the error
    match = _ISO_RE.match(text.strip())
    if not match:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    value = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro)
    if offset and offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        value = value.replace(tzinfo=timezone(sign * delta))
    else:
        value = value.replace(tzinfo=UTC)
    return truncate_ms(value.astimezone(UTC))


def to_utc(value: datetime | str) -> datetime:
    """Normalize an input datetime: aware → UTC, naive → taken as UTC, ISO string parsed.

    Raises ``ValueError`` or ``TypeError`` for anything else.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        elif value.tzinfo is not UTC:  # already UTC: skip the conversion (a bulk-path hot spot)
            value = value.astimezone(UTC)
        return truncate_ms(value)
    if isinstance(value, str):
        return parse_iso(value)
    raise TypeError(f"not a datetime: {value!r}")


def format_iso(value: datetime) -> str:
    """``2026-01-31T09:05:01.123Z``: the stored text form on SQLite and the wire form."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat truncates to milliseconds (never rounds), pads the year to four digits, and is
    # faster than strftime; "+00:00" becomes "Z".
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch."""
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_epoch_ms(value: int) -> datetime:
    """Inverse of :func:`epoch_ms`."""
    return _EPOCH + timedelta(milliseconds=int(value))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def later_than(stored: datetime | None, now: datetime) -> datetime:
    """``now``, or ``stored`` + 1 ms when the clock has not moved past ``stored``: an
    ``updated_at`` that always moves forward, even on a clock that steps back."""
    return now if stored is None or now > stored else stored + timedelta(milliseconds=1)


class VersionClock:
    """Process-wide source of ClickHouse row versions: microseconds, never repeating or going back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self, above: int = 0) -> int:
        """A version later than every earlier one and than ``above``."""
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 1, above + 1)
            return self._last


VERSION_CLOCK = VersionClock()


# --------------------------------------------------------------------------- JSON values

NOT_JSON = "Not JSON-serializable."


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _strip_surrogates(text: str) -> str:
    # Fast exits first: ASCII text has no surrogates, and UTF-8 encoding fails only on them.
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    return "".join(ch for ch in text if not "\ud800" <= ch <= "\udfff")


def clean_text(text: str, *, strip_nul: bool = False) -> str:
    """Remove what the drivers cannot store: unpaired surrogates, and U+0000 for PostgreSQL."""
    text = _strip_surrogates(text)
    return text.replace("\x00", "") if strip_nul and "\x00" in text else text


def is_storable_text(text: str, strip_nul: bool) -> bool:
    """Whether ``text`` reaches the database unchanged: no unpaired surrogate and, where U+0000
    is stripped (PostgreSQL), no U+0000.  The bulk paths' quick check before :func:`clean_text`."""
    if strip_nul and "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class NotStorable(Exception):
    """Raised by :func:`storable_json_copy` for a value its caller's full check must look at."""


def storable_json_copy(value: Any, max_depth: int) -> Any:
    """A fresh copy of ``value`` if it is plain JSON that every backend stores unchanged: exact
    ``dict`` (``str`` keys), ``list``, ``str``, ``int``, ``bool``, ``None`` and finite ``float``,
    no string (keys included) holding U+0000 or an unpaired surrogate, lists and dicts nested at
    most ``max_depth`` deep.  Anything else raises :class:`NotStorable`.

    The quick route of the strict checks (dataset payloads, experiment results): it builds no
    paths, so the caller's full check runs only for values this refuses, and reports them.
    """
    return _storable_copy(value, max_depth)


def _storable_copy(value: Any, depth_left: int) -> Any:
    kind = type(value)
    if kind is str:  # the test of is_storable_text, inline: strings are most of a payload
        if "\x00" in value or not value.isascii() and not is_storable_text(value, False):
            raise NotStorable
        return value
    if kind is dict or kind is list:
        if depth_left == 0:  # also stops a reference cycle
            raise NotStorable
        if kind is list:
            return [_storable_copy(item, depth_left - 1) for item in value]
        copy = {}
        for key, item in value.items():
            if type(key) is not str or "\x00" in key or not key.isascii() and not is_storable_text(key, False):
                raise NotStorable
            copy[key] = _storable_copy(item, depth_left - 1)
        return copy
    if value is None or kind is bool or kind is int or kind is float and math.isfinite(value):
        return value
    raise NotStorable


def find_bad_text(value: Any, path: str = "", _seen: frozenset[int] = frozenset()) -> Iterator[str]:
    """Paths of strings (keys included) holding an unpaired surrogate or U+0000."""
    if isinstance(value, (dict, list, tuple)):
        if id(value) in _seen:
            return  # a reference cycle: normalize_json reports it as not JSON-serializable
        _seen = _seen | {id(value)}
    if isinstance(value, str):
        if "\x00" in value or not is_storable_text(value, False):  # (a surrogate: not encodable)
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            sub = _join(path, key)
            if isinstance(key, str) and ("\x00" in key or _strip_surrogates(key) != key):
                yield sub
            yield from find_bad_text(item, sub, _seen)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from find_bad_text(item, _join(path, index), _seen)


class NotPlainJSON(Exception):
    """A value :func:`plain_json_copy` does not copy as it is."""


def plain_json_copy(value: Any, clean: bool) -> Any:
    """A fresh copy of a value made only of ``dict`` (``str`` keys), ``list``, ``tuple``, ``str``,
    ``int``, finite ``float``, ``bool`` and ``None`` (exact types); else :class:`NotPlainJSON`."""
    kind = type(value)
    if kind is str:  # (ASCII text has no surrogates: the common case skips a call)
        return _strip_surrogates(value) if clean and not value.isascii() else value
    if kind is dict:
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise NotPlainJSON
            if clean and not key.isascii():
                key = _strip_surrogates(key)
            item_kind = type(item)
            # Scalar members inline: most of a payload's values, each a call otherwise.
            if item_kind is str:
                copy[key] = _strip_surrogates(item) if clean and not item.isascii() else item
            elif item is None or item_kind is int or item_kind is bool:
                copy[key] = item
            else:
                copy[key] = plain_json_copy(item, clean)
        return copy
    if kind is list or kind is tuple:
        return [plain_json_copy(item, clean) for item in value]
    if value is None or kind is bool or kind is int:
        return value
    if kind is float and math.isfinite(value):
        return value
    raise NotPlainJSON


def normalize_json(value: Any, path: str = "", errors: dict[str, list[str]] | None = None,
                   *, clean: bool = True, _seen: set[int] | None = None) -> Any:
    """Check that ``value`` is a JSON value and return a fresh copy ready to store.

    Tuples become lists, nested datetimes/dates become ISO strings, unpaired surrogates are
    removed from strings when ``clean`` is true.  Problems are recorded in ``errors`` as
    ``{path: ["Not JSON-serializable."]}`` (the path of each bad value); the returned copy then
    must not be used.
    """
    if _seen is None:
        # Most values are plain JSON: copy them without building paths; anything else (subclasses,
        # datetimes, bad values, cycles) takes the full walk below, which reports errors.
        try:
            return plain_json_copy(value, clean)
        except (NotPlainJSON, RecursionError):
            pass
    if errors is None:
        errors = {}
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _strip_surrogates(value) if clean else value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        errors.setdefault(path, []).append(NOT_JSON)
        return None
    if isinstance(value, datetime):
        return format_iso(to_utc(value))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        seen = _seen if _seen is not None else set()
        if id(value) in seen:
            errors.setdefault(path, []).append(NOT_JSON)
            return None
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                out = {}
                for key, item in value.items():
                    if not isinstance(key, str):
                        errors.setdefault(_join(path, str(key)), []).append(NOT_JSON)
                        continue
                    out[_strip_surrogates(key) if clean else key] = normalize_json(
                        item, _join(path, key), errors, clean=clean, _seen=seen)
                return out
            return [normalize_json(item, _join(path, i), errors, clean=clean, _seen=seen)
                    for i, item in enumerate(value)]
        finally:
            seen.discard(id(value))
    errors.setdefault(path, []).append(NOT_JSON)
    return None


#: A version-4 UUID's fixed bits (RFC 4122: version 4, variant 10), as :class:`uuid.UUID` sets them.
_UUID4_KEEP = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_UUID4_FIXED = (0x8000 << 48) | (4 << 76)


def random_id() -> str:
    """A new random id: what ``str(uuid.uuid4())`` gives (the same random bits, version and
    variant), without :class:`uuid.UUID`'s constructor, whose checks run ~240 Python steps, a
    tenth of a hot single-row insert's Python (issue 20)."""
    text = (int.from_bytes(os.urandom(16), "big") & _UUID4_KEEP | _UUID4_FIXED).to_bytes(16, "big").hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class JSONText(str):
    """JSON text already encoded with :func:`json_dumps`; JSON columns write it as it is.

    Lets a bulk path encode each value once (for its checks) and store that same text.
    """

    __slots__ = ()


#: Stored JSON ``null``: what a ``None`` input is in a ``NOT NULL`` JSON column (the backends'
#: insert sends a bare ``None`` as SQL ``NULL``).
JSON_NULL = JSONText("null")


# One configured encoder: json.dumps with options would build a new encoder on every call.
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_json_thread = threading.local()


def _thread_encoder() -> tuple[Any, dict]:
    """This thread's C encoder for :func:`json_dumps`, built once: ``(encode, markers)``."""
    try:
        return _json_thread.encoder
    except AttributeError:
        markers: dict = {}  # the encoder's circular-reference check
        encode = json.encoder.c_make_encoder(markers, _JSON_ENCODER.default, json.encoder.encode_basestring,
                                             None, ":", ",", False, False, False)
        _json_thread.encoder = (encode, markers)
        return _json_thread.encoder


def json_dumps(value: Any) -> str:
    """Compact JSON text with non-ASCII kept as UTF-8 (the stored form on every backend).

    A :class:`JSONText` is already that text and is returned as a plain ``str``.
    """
    if type(value) is JSONText:
        return str.__str__(value)
    if json.encoder.c_make_encoder is None:  # no C accelerator: the plain encoder
        return _JSON_ENCODER.encode(value)
    # Bulk paths encode hundreds of thousands of values: reuse one C encoder per thread.
    try:
        encode, markers = _json_thread.encoder
    except AttributeError:
        encode, markers = _thread_encoder()
    try:
        return "".join(encode(value, 0))
    except BaseException:
        markers.clear()  # an aborted encoding leaves its open containers marked
        raise


#: A plain decoder (one value, nothing around it): :func:`encoded_json_object`'s copy.
_decode_json_text = json.JSONDecoder().decode


def encoded_json_object(value: Any, strip_nul: bool) -> tuple[JSONText, dict[str, Any]] | None:
    """``value`` (a JSON object argument) checked the quick way: its stored text and a fresh copy
    (what the JSON fields load), or ``None`` when not vouched for (then the field reports).

    Encoding and decoding run in C, where copying member by member in Python (:func:`normalize_json`)
    costs a hot call more than its SQL.  Vouched for when the decoded copy equals ``value`` (``json_dumps``
    silently converts tuples and non-string keys, which the fields treat) and the text holds
    nothing the driver cannot store."""
    if type(value) is not dict:
        return None
    try:
        text = json_dumps(value)
        if not is_storable_text(text, False) or (strip_nul and "\\u0000" in text):
            return None
        copy = _decode_json_text(text)
    except (TypeError, ValueError, RecursionError):  # not JSON, or needs normalizing (datetimes)
        return None
    return (JSONText(text), copy) if copy == value else None


#: json.loads' scanner, called directly by :func:`json_loads` (one value from a position: ``(value, end)``).
_scan_json = json.scanner.make_scanner(json.JSONDecoder())


def json_loads(value: Any) -> Any:
    """Decode a stored JSON value: text, a SQLite JSONB blob, or an already decoded object.

    Text that does not parse is returned as the raw string instead of failing the read.
    """
    if type(value) is not str:  # (text first: scans decode a value per row)
        if value is None or isinstance(value, (dict, list, int, float, bool)):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            try:
                return decode_jsonb(raw)
            except ValueError:
                value = raw.decode("utf-8", errors="replace")
    if type(value) is str:
        # Stored JSON is compact text: the C scanner reads it whole without json.loads' layers
        # (a point read decodes a few small values; those layers cost as much as the decoding).
        try:
            decoded, end = _scan_json(value, 0)
            if end == len(value):
                return decoded
        except (StopIteration, ValueError, RecursionError):
            pass  # json.loads below gives the answer (whitespace around the value, or not JSON)
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def deep_copy_json(value: Any) -> Any:
    """A fresh copy of a JSON value (cheaper than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {key: deep_copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [deep_copy_json(item) for item in value]
    return value


# --------------------------------------------------------------------------- id lists

#: Ids per statement of a bulk read, update or delete (every backend takes this many parameters).
ID_CHUNK = 500


def chunks(values: Sequence[Any], *, size: int = ID_CHUNK, max_chars: int | None = None) -> Iterator[list[Any]]:
    """``values`` in lists of at most ``size`` members; with ``max_chars``, also of at most about
    that many characters of (string) ids, for servers that limit a query's length (ClickHouse)."""
    if max_chars is None:
        for start in range(0, len(values), size):
            yield list(values[start:start + size])
        return
    chunk: list[Any] = []
    length = 0
    for value in values:
        if chunk and (len(chunk) >= size or length + len(value) > max_chars):
            yield chunk
            chunk, length = [], 0
        chunk.append(value)
        length += len(value) + 4  # quotes, comma and space around each id
    if chunk:
        yield chunk
