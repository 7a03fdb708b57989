"""Hypothesis strategies of values that the spec rejects (README *Input values*, *Pagination*,
*Ordering*, *Metadata filters*, *Tenancy scope* and the domain files' field tables).

Every strategy here yields only values that are invalid wherever it is used, so a test may
demand a ``ValidationError`` for each of them.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Iterable

from hypothesis import strategies as st

VALID_METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_METADATA_KEYS = ("__proto__", "prototype", "constructor")


def _cycle() -> list:
    loop: list = ["a"]
    loop.append(loop)
    return loop


#: Values that are not JSON: README *Input values* lists each of these as an error.
NOT_JSON_LEAF = st.one_of(
    st.builds(set, st.lists(st.integers(), max_size=2)),
    st.builds(frozenset),
    st.binary(max_size=4),
    st.builds(bytearray, st.binary(max_size=4)),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.complex_numbers(allow_nan=False, allow_infinity=False, max_magnitude=10),
    st.builds(object),
    st.builds(lambda: {1: "integer key"}),
    st.builds(lambda: {("a", "b"): "tuple key"}),
    st.builds(_cycle),
    st.just(range(3)),
    st.just(Decimal("1.5")),
)

#: Plain JSON values (valid anywhere a JSON value is accepted).
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)

JSON_KEYS = st.text(alphabet="abcdefgxyz_", min_size=1, max_size=6)


def _nest(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.dictionaries(JSON_KEYS, inner, min_size=1, max_size=2),
        st.lists(inner, min_size=1, max_size=2),
        st.builds(lambda bad, good: [good, bad], inner, JSON_VALUE),
        st.builds(lambda key, bad, good: {"ok": good, key: bad}, JSON_KEYS.filter(lambda k: k != "ok"), inner,
                  JSON_VALUE),
    )


#: A non-JSON value, possibly deep inside dicts and lists of good values.
NOT_JSON = st.recursive(NOT_JSON_LEAF, _nest, max_leaves=4)
#: A dict holding a non-JSON value somewhere (bad for any JSON field).
OBJECT_WITH_BAD_MEMBER = _nest(NOT_JSON).filter(lambda value: isinstance(value, dict))

NOT_A_DICT = st.one_of(st.lists(JSON_VALUE, max_size=2), st.text(max_size=5), st.integers(),
                       st.floats(allow_nan=False), st.booleans())

#: Wrong types for a string field (never a ``str``, never ``None``).
NOT_STRING = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))

#: Bad values of a required id argument: README "Id arguments must be non-empty strings".
BAD_ID = st.one_of(st.just(""), st.none(), NOT_STRING)
#: Bad values of an optional id (``None`` allowed).
BAD_OPTIONAL_ID = st.one_of(st.just(""), NOT_STRING)

#: Never an ISO-8601 datetime, nor a ``datetime``: "Not a valid datetime."
NOT_DATETIME = st.one_of(
    st.sampled_from(["", "yesterday", "2026-13-45T99:99:99Z", "31/01/2026", "2026-02-30", "12:00", "now", "T"]),
    st.text(alphabet="abcxyz !?", min_size=1, max_size=8),
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2),
    st.builds(lambda: {"year": 2026}),
)
#: A required datetime: also ``None``.
BAD_REQUIRED_DATETIME = st.one_of(NOT_DATETIME, st.none())


def not_one_of(allowed: Iterable[str], *, nullable: bool = True) -> st.SearchStrategy:
    """Values outside an enumeration (checks are case-sensitive); ``None`` too unless nullable."""
    allowed = set(allowed)
    options = [st.text(max_size=10).filter(lambda text: text not in allowed),
               st.sampled_from(sorted(value.upper() if value.upper() != value else value.lower()
                                      for value in allowed)).filter(lambda text: text not in allowed),
               NOT_STRING]
    if not nullable:
        options.append(st.none())
    return st.one_of(*options)


def bad_int(minimum: int, *, nullable: bool = True) -> st.SearchStrategy:
    """Not an ``int`` >= ``minimum`` (``bool`` counts as wrong)."""
    options = [st.integers(max_value=minimum - 1), st.booleans(),
               st.floats(allow_nan=False).filter(lambda number: not number.is_integer()),
               st.text(alphabet="0123456789", min_size=1, max_size=3), st.lists(st.integers(), max_size=1)]
    if not nullable:
        options.append(st.none())
    return st.one_of(*options)


#: Bad values for a JSON-object field that accepts ``None``.
BAD_OBJECT = st.one_of(NOT_A_DICT, OBJECT_WITH_BAD_MEMBER)
#: Bad values for a required JSON-object field.
BAD_REQUIRED_OBJECT = st.one_of(BAD_OBJECT, st.none())
#: Bad values for a field holding any JSON value.
BAD_JSON = NOT_JSON
#: Bad values for a ``list[str]`` field: a bare string, other types, non-string members.
BAD_STRING_LIST = st.one_of(st.text(min_size=1, max_size=5), st.integers(), st.builds(dict, a=st.integers()),
                            st.lists(NOT_STRING, min_size=1, max_size=2),
                            st.builds(lambda good, bad: [good, bad], st.text(max_size=3), NOT_STRING))
#: Bad values for a list-of-JSON field.
BAD_LIST = st.one_of(st.text(max_size=4), st.integers(), st.builds(dict, a=st.integers()),
                     st.lists(NOT_JSON, min_size=1, max_size=2))

#: Keys no record accepts (records reject unknown keys).
UNKNOWN_KEY = st.from_regex(r"zz_unknown_[a-z]{1,6}", fullmatch=True)

# --------------------------------------------------------------------------- list arguments

#: ``page`` values that are invalid whatever ``per_page`` is.
BAD_PAGE = st.one_of(st.integers(max_value=-1), st.booleans(), st.floats(allow_nan=False),
                     st.text(alphabet="0123456789", min_size=1, max_size=2), st.lists(st.integers(), max_size=1))
#: ``per_page`` values that are invalid.
BAD_PER_PAGE = st.one_of(st.integers(max_value=-1), st.just(True), st.floats(allow_nan=False),
                         st.text(alphabet="0123456789", min_size=1, max_size=2), st.lists(st.integers(), max_size=1))

#: Metadata filter keys the spec rejects (status ``INVALID_METADATA_KEY``).
BAD_METADATA_KEY = st.one_of(
    st.text(max_size=12).filter(lambda key: not VALID_METADATA_KEY.fullmatch(key)),
    st.sampled_from(RESERVED_METADATA_KEYS),
    st.from_regex(r"[a-z]{129,140}", fullmatch=True),
    st.sampled_from(["a.b", "a b", "1abc", "a-b", "$.a", "a'--", "ключ", "a\x00"]),
)
#: Valid metadata filter keys.
GOOD_METADATA_KEY = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True).filter(
    lambda key: key not in RESERVED_METADATA_KEYS)
#: Metadata filter values the spec rejects (status ``INVALID_METADATA_VALUE``).
BAD_METADATA_VALUE = st.one_of(st.lists(st.integers(), max_size=2), st.dictionaries(JSON_KEYS, st.integers(), max_size=2),
                               NOT_JSON_LEAF)

#: Bad ``order_by`` values whose problem is the dict's content (status ``INVALID_INPUT``).
def bad_order_by(allowed: Iterable[str]) -> st.SearchStrategy:
    """``order_by`` dicts with a field outside ``allowed``, a bad direction, or an unknown key."""
    allowed = list(allowed)
    bad_field = st.one_of(st.text(max_size=12).filter(lambda f: f not in allowed), NOT_STRING,
                          st.sampled_from([f.upper() for f in allowed] + ["id; DROP TABLE x", "1", "createdAt"]))
    bad_direction = st.one_of(st.text(max_size=6).filter(lambda d: d.upper() not in ("ASC", "DESC")), NOT_STRING,
                              st.sampled_from(["ASCENDING", "up", "DESC;", "ASC NULLS FIRST"]))
    return st.one_of(
        st.builds(lambda f: {"field": f}, bad_field),
        st.builds(lambda d: {"direction": d}, bad_direction),
        st.builds(lambda f, d: {"field": f, "direction": d}, st.sampled_from(allowed), bad_direction),
        st.builds(lambda k: {"field": allowed[0], k: "x"}, UNKNOWN_KEY),
    )


#: Tenancy filters the spec rejects: unknown keys or non-string values.
BAD_TENANCY = st.one_of(
    st.builds(lambda k: {k: "x"}, UNKNOWN_KEY),
    st.builds(lambda key, value: {key: value}, st.sampled_from(["organization_id", "project_id"]), NOT_STRING),
)
