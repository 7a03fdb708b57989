"""Tests for repository.jsonb: SQLite JSONB decoding/encoding in pure Python.

Hex vectors marked "from SQLite" were produced by SQLite 3.54's jsonb().
"""

from __future__ import annotations

import json
import math
import random
import sqlite3

import pytest

from composite_store.jsonb import decode_jsonb, encode_jsonb, is_jsonb, jsonb_to_json_text

NULL, TRUE, FALSE, INT, INT5, FLOAT, FLOAT5 = range(7)
TEXT, TEXTJ, TEXT5, TEXTRAW, ARRAY, OBJECT = range(7, 13)


def el(kind: int, payload: bytes | str = b"") -> bytes:
    """A JSONB element with the smallest header, built independently of the module."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload)
    if n <= 11:
        return bytes([n << 4 | kind]) + payload
    for code, width in ((12, 1), (13, 2), (14, 4), (15, 8)):
        if n < 1 << (8 * width):
            return bytes([code << 4 | kind]) + n.to_bytes(width, "big") + payload
    raise AssertionError


# --- round trips -------------------------------------------------------------

ROUND_TRIP = [
    None,
    True,
    False,
    0,
    -1,
    42,
    2**63 - 1,
    -(2**63),
    2**200,
    -(10**40),
    0.1,
    -2.5,
    1e300,
    5e-324,
    1e-7,
    1e21,
    "",
    "plain",
    "héllo wörld",
    "日本語のテキスト",
    "emoji 😀🎉👨‍👩‍👧",
    'quote " backslash \\ slash /',
    "newline\nreturn\rtab\tbell\x07nul\x00 unit\x1f del\x7f",
    "\u2028\u2029",
    "x" * 11,
    "x" * 12,
    "y" * 300,
    "z" * 70_000,
    [],
    {},
    [1, "two", 3.0, None, True, False, [], {}],
    {"a": {"b": {"c": [1, {"d": "é😀"}]}}, "": "empty key", "k\n\"": [[[]]]},
    {"id": "thread-1", "metadata": {"tags": ["x", "y"], "score": 0.75, "count": 3}},
    [[[[[[[[[[["deep"]]]]]]]]]]],
    list(range(1000)),
    {f"key{i}": {"v": i, "s": "é" * i} for i in range(50)},
]


@pytest.mark.parametrize("obj", ROUND_TRIP, ids=lambda o: repr(o)[:40])
def test_round_trip(obj):
    blob = encode_jsonb(obj)
    assert is_jsonb(blob)
    decoded = decode_jsonb(blob)
    assert decoded == obj
    assert type(decoded) is type(obj)
    assert jsonb_to_json_text(blob) == json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def test_round_trip_negative_zero_and_tuple():
    assert math.copysign(1.0, decode_jsonb(encode_jsonb(-0.0))) == -1.0
    assert decode_jsonb(encode_jsonb((1, (2, 3)))) == [1, [2, 3]]


def test_round_trip_deep_nesting():
    obj: list = []
    for _ in range(200):
        obj = [obj]
    assert decode_jsonb(encode_jsonb(obj)) == obj


# --- hand-written vectors for every element type -----------------------------


@pytest.mark.parametrize(
    "blob, expected",
    [
        (b"\x00", None),
        (b"\x01", True),
        (b"\x02", False),
        # INT: canonical decimal text
        (el(INT, "0"), 0),
        (el(INT, "42"), 42),
        (el(INT, "-17"), -17),
        (el(INT, "012"), 12),  # SQLite's json_valid() accepts this too
        (el(INT, "123456789012345678901234567890"), 123456789012345678901234567890),
        # INT5: JSON5 integers
        (el(INT5, "0x1F"), 31),
        (el(INT5, "0X1f"), 31),
        (el(INT5, "-0x1f"), -31),
        (el(INT5, "+0x10"), 16),
        (el(INT5, "+5"), 5),
        (el(INT5, "0x" + "F" * 20), 16**20 - 1),
        # FLOAT: canonical text
        (el(FLOAT, "2.5"), 2.5),
        (el(FLOAT, "1e5"), 1e5),
        (el(FLOAT, "1E+5"), 1e5),
        (el(FLOAT, "-1.5E-3"), -1.5e-3),
        (el(FLOAT, "9e999"), math.inf),  # SQLite's encoding of Infinity
        (el(FLOAT, "-9e999"), -math.inf),
        # FLOAT5: JSON5 floats
        (el(FLOAT5, ".5"), 0.5),
        (el(FLOAT5, "5."), 5.0),
        (el(FLOAT5, "+1.5"), 1.5),
        (el(FLOAT5, "-.5e3"), -500.0),
        (el(FLOAT5, "Infinity"), math.inf),
        (el(FLOAT5, "+Infinity"), math.inf),
        (el(FLOAT5, "-Infinity"), -math.inf),
        # TEXT: raw UTF-8
        (el(TEXT, ""), ""),
        (el(TEXT, "hello"), "hello"),
        (el(TEXT, "é😀"), "é😀"),
        (el(TEXT, "it's"), "it's"),
        # TEXTJ: JSON escapes
        (el(TEXTJ, r"a\nb"), "a\nb"),
        (el(TEXTJ, r"\"\\\/\b\f\n\r\t"), "\"\\/\b\f\n\r\t"),
        (el(TEXTJ, r"\u00e9\u00C9\u0000"), "éÉ\0"),
        (el(TEXTJ, r"\ud83d\ude00!"), "😀!"),  # surrogate pair
        (el(TEXTJ, r"\uD83D\uDE00\uD83C\uDF89"), "😀🎉"),
        (el(TEXTJ, r"x\ud83dy"), "x\ufffdy"),  # lone high surrogate
        (el(TEXTJ, r"\ude00"), "\ufffd"),  # lone low surrogate
        (el(TEXTJ, r"\ud83d\u0041"), "\ufffdA"),
        (el(TEXTJ, "é raw \\n"), "é raw \n"),
        # TEXT5: JSON5 escapes
        (el(TEXT5, r"\x41\'\v\0"), "A'\v\0"),
        (el(TEXT5, "a\\\nb\\\r\nc\\\rd\\\u2028e\\\u2029f"), "abcdef"),  # line continuations
        (el(TEXT5, r"\q\u00e9"), "qé"),  # JSON5: other escaped chars stand for themselves
        (el(TEXT5, 'a"b'), 'a"b'),  # from SQLite: jsonb('[''a"b'']') keeps the raw quote
        # TEXTRAW: taken literally
        (el(TEXTRAW, 'a"b\\c\n'), 'a"b\\c\n'),
        (el(TEXTRAW, r"\u0041"), r"\u0041"),
        # ARRAY / OBJECT
        (b"\x0b", []),
        (b"\x0c", {}),
        (el(ARRAY, b"\x00\x01\x02" + el(INT, "7")), [None, True, False, 7]),
        (el(OBJECT, el(TEXT, "a") + el(ARRAY, el(OBJECT))), {"a": [{}]}),
        (el(OBJECT, el(TEXTJ, r"k\n") + b"\x00" + el(TEXT5, r"\x41") + b"\x01" + el(TEXTRAW, '"') + b"\x02"),
         {"k\n": None, "A": True, '"': False}),
        (el(OBJECT, el(TEXT, "a") + el(INT, "1") + el(TEXT, "a") + el(INT, "2")), {"a": 2}),  # last wins
        # from SQLite
        (bytes.fromhex("2B1331"), [1]),
        (bytes.fromhex("BC17618B133135322E351778"), {"a": [1, 2.5, "x"]}),
        (bytes.fromhex("6C1A613A782279"), {"a": 'x"y'}),  # jsonb_set('{}','$.a','x"y'): TEXTRAW
        (bytes.fromhex("4C1A611A0A"), {"a": "\n"}),
        (bytes.fromhex("CB0F5539653939390000652D3965393939"), [math.inf, None, None, -math.inf]),
        (bytes.fromhex("CB10262E3526352E35312E35562D2E356533"), [0.5, 5.0, 1.5, -500.0]),
        (bytes.fromhex("CB284430783146542D3078316613354430783130C4143078") + b"F" * 18,
         [31, -31, 5, 16, 16**18 - 1]),
        (bytes.fromhex("B9615C7834315C275C765C30"), "aA'\v\0"),
        (bytes.fromhex("C8125C75303065395C75643833645C7564653030"), "é😀"),
    ],
    ids=lambda v: v.hex()[:24] if isinstance(v, bytes) else None,
)
def test_decode_vectors(blob, expected):
    assert decode_jsonb(blob) == expected
    assert is_jsonb(blob)


def test_decode_nan():
    assert math.isnan(decode_jsonb(el(FLOAT5, "NaN")))
    assert math.isnan(decode_jsonb(el(FLOAT5, "-NaN")))


@pytest.mark.parametrize(
    "blob",
    [
        b"\xc7\x03abc",  # size code 12: 1-byte size (here larger than needed)
        b"\xd7\x00\x03abc",  # 13: 2-byte size
        b"\xe7\x00\x00\x00\x03abc",  # 14: 4-byte size
        b"\xf7\x00\x00\x00\x00\x00\x00\x00\x03abc",  # 15: 8-byte size
        b"\x37abc",  # direct size 3
    ],
)
def test_header_size_encodings(blob):
    assert decode_jsonb(blob) == "abc"


def test_header_size_encodings_from_sqlite():
    # jsonb('["' || 300 x 'a' || '"]') and the same with 70000 x 'a'
    blob = bytes.fromhex("DB012FD7012C") + b"a" * 300
    assert decode_jsonb(blob) == ["a" * 300]
    blob = bytes.fromhex("EB00011175E700011170") + b"a" * 70_000
    assert decode_jsonb(blob) == ["a" * 70_000]
    assert decode_jsonb(b"\xfb" + (5).to_bytes(8, "big") + b"\xc7\x03abc") == ["abc"]


# --- encoder -----------------------------------------------------------------


@pytest.mark.parametrize(
    "obj, hex_",
    [  # all from SQLite's jsonb() on json.dumps(obj)
        ({"a": [1, 2.5, "x"]}, "BC17618B133135322E351778"),
        ([1], "2B1331"),
        ([], "0B"),
        ({}, "0C"),
        ("a\nb", "48615C6E62"),  # TEXTJ keeps the escape
        ("it's", "4769742773"),  # TEXT
        ("/", "172F"),  # json.dumps does not escape "/"
        ("\x7f", "177F"),
        ([math.inf, math.nan, -math.inf], "CB0E55396539393900652D3965393939"),
        ([1e5, -0.0, 1.0], "CB12853130303030302E30452D302E3035312E30"),
    ],
)
def test_encode_vectors(obj, hex_):
    assert encode_jsonb(obj).hex().upper() == hex_


@pytest.mark.parametrize(
    "n, header",
    [
        (0, b"\x07"),
        (11, b"\xb7"),
        (12, b"\xc7\x0c"),
        (255, b"\xc7\xff"),
        (256, b"\xd7\x01\x00"),
        (65535, b"\xd7\xff\xff"),
        (65536, b"\xe7\x00\x01\x00\x00"),
    ],
)
def test_encode_smallest_header(n, header):
    assert encode_jsonb("a" * n) == header + b"a" * n


def test_encode_text_kinds():
    assert encode_jsonb("é😀")[0] & 0x0F == TEXT
    for s in ['"', "\\", "\n", "\x01"]:
        blob = encode_jsonb(s)
        assert blob[0] & 0x0F == TEXTJ
        assert blob[1:].decode() == json.dumps(s)[1:-1]


def test_decode_rejects_non_buffers():
    for value in (1, "\x00", None):
        with pytest.raises(TypeError):
            decode_jsonb(value)
        assert not is_jsonb(value)


def test_json_text_huge_hex_int_gives_none_not_recursion():
    blob = el(INT5, "0x" + "F" * 4000)  # decodes fine, but its ~4800 digits exceed int->str limit
    assert decode_jsonb(blob) == 16**4000 - 1
    assert jsonb_to_json_text(blob) is None


def test_encode_rejects_unsupported():
    with pytest.raises(TypeError):
        encode_jsonb({1: "int key"})
    with pytest.raises(TypeError):
        encode_jsonb({1, 2})
    with pytest.raises(TypeError):
        encode_jsonb(b"bytes")


# --- malformed input ---------------------------------------------------------

MALFORMED = [
    b"",
    b"\x0d",  # reserved types 13-15
    b"\x0e",
    b"\x0f",
    b"\x1b\x0d",  # reserved type nested
    b"\x00\x00",  # trailing bytes
    b"\x2b\x13\x31\x00",
    b"\x17",  # truncated payload
    b"\x37ab",
    b"\xc7",  # truncated size field
    b"\xd7\x00",
    b"\xe7\x00\x00\x00",
    b"\xf7\x00\x00\x00\x00\x00\x00\x00",
    b"\xf7\xff\xff\xff\xff\xff\xff\xff\xffabc",  # huge size
    b"\x2b\x23\x31",  # child overruns its array
    b"\x1b\x17",
    b"\x10\xab",  # null/true/false with a payload
    b"\x11\xab",
    b"\x12\xab",
    el(OBJECT, el(INT, "1") + el(INT, "2")),  # non-text key
    el(OBJECT, b"\x00\x01"),
    el(OBJECT, el(ARRAY) + el(INT, "2")),
    el(OBJECT, el(TEXT, "a")),  # key without value
    el(INT, ""),  # bad numbers
    el(INT, "1_0"),
    el(INT, " 5"),
    el(INT, "+5"),
    el(INT, "0x1F"),
    el(INT, "1.5"),
    el(INT, "١٢"),  # non-ASCII digits
    el(INT5, "1.5"),
    el(INT5, "0x"),
    el(INT5, "0x1G"),
    el(FLOAT, ""),
    el(FLOAT, "1_0.5"),
    el(FLOAT, "inf"),
    el(FLOAT, "Infinity"),
    el(FLOAT, ".5"),
    el(FLOAT, "1.5 "),
    el(FLOAT5, "inf"),
    el(FLOAT5, "0x1p3"),
    el(FLOAT5, "1e"),
    el(FLOAT5, "."),
    el(TEXT, b"\xff"),  # invalid UTF-8
    el(TEXTRAW, b"\xc3"),
    el(TEXTJ, "\\"),  # dangling backslash
    el(TEXTJ, "ab\\"),
    el(TEXTJ, r"\u12"),
    el(TEXTJ, r"\uZZZZ"),
    el(TEXT5, r"\x4"),
    el(TEXT5, r"\1"),
]


@pytest.mark.parametrize("blob", MALFORMED, ids=lambda b: b.hex()[:24] or "empty")
def test_malformed(blob):
    with pytest.raises(ValueError):
        decode_jsonb(blob)
    assert not is_jsonb(blob)
    assert jsonb_to_json_text(blob) is None


def test_malformed_too_deep():
    blob = b"\x0b"
    for _ in range(5000):
        blob = el(ARRAY, blob)
    with pytest.raises(ValueError):
        decode_jsonb(blob)
    assert jsonb_to_json_text(blob) is None


def test_every_truncation_is_rejected():
    blob = encode_jsonb({"a": [1, 2.5, "x\ny", {"b": None}], "c": "é" * 20})
    for cut in range(len(blob)):
        with pytest.raises(ValueError):
            decode_jsonb(blob[:cut])


def test_random_bytes_never_raise_from_sql_function():
    rng = random.Random(1234)
    valid = encode_jsonb({"k": [1, "two", 3.5, None]})
    for _ in range(3000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24)))
        if rng.random() < 0.5:  # mutate a valid blob instead
            blob = bytearray(valid)
            blob[rng.randrange(len(blob))] = rng.randrange(256)
            blob = bytes(blob)
        result = jsonb_to_json_text(blob)
        if result is not None:
            json.loads(result)  # whatever decodes renders as valid JSON text


@pytest.mark.parametrize("text", [b'{"a":1}', b"[1]", b'"x"', b"null", b"12345", b"true"])
def test_json_text_stored_as_blob_is_not_jsonb(text):
    assert not is_jsonb(text)
    assert jsonb_to_json_text(text) is None


# --- jsonb_to_json_text --------------------------------------------------------


def test_json_text_passthrough_and_scalars():
    assert jsonb_to_json_text(None) is None
    assert jsonb_to_json_text('{"a": 1}') == '{"a": 1}'
    assert jsonb_to_json_text("not json at all") == "not json at all"
    assert jsonb_to_json_text(5) == "5"
    assert jsonb_to_json_text(-2.5) == "-2.5"
    assert jsonb_to_json_text(math.inf) == "9e999"
    assert jsonb_to_json_text(math.nan) == "null"
    assert jsonb_to_json_text(object()) is None


def test_json_text_from_blob():
    obj = {"a": [1, 2.5, "é😀", None, True], "b": {"c": "x\ny"}}
    blob = encode_jsonb(obj)
    assert jsonb_to_json_text(blob) == '{"a":[1,2.5,"é😀",null,true],"b":{"c":"x\\ny"}}'
    assert jsonb_to_json_text(bytearray(blob)) == jsonb_to_json_text(memoryview(blob))
    assert jsonb_to_json_text(memoryview(blob)) == jsonb_to_json_text(blob)


def test_json_text_non_finite_numbers_as_sqlite_renders_them():
    blob = bytes.fromhex("CB0F5539653939390000652D3965393939")  # [Infinity,NaN,NaN,-Infinity]
    assert jsonb_to_json_text(blob) == "[9e999,null,null,-9e999]"
    blob = el(OBJECT, el(TEXT, "n") + el(FLOAT5, "NaN") + el(TEXT, "i") + el(ARRAY, el(FLOAT5, "-Infinity")))
    assert jsonb_to_json_text(blob) == '{"n":null,"i":[-9e999]}'


def test_registered_as_sql_function_on_old_sqlite():
    """The real use: SQLite 3.40's json functions over cs_json(column)."""
    conn = sqlite3.connect(":memory:")
    conn.create_function("cs_json", 1, jsonb_to_json_text, deterministic=True)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, meta)")
    rows = [
        (1, encode_jsonb({"tag": "é😀", "n": 3, "inf": math.inf})),
        (2, '{"tag": "text", "n": 4}'),  # a row written as text JSON
        (3, b"\xff\xfe not jsonb"),
        (4, None),
        (5, bytes.fromhex("6C1A613A782279")),
    ]
    conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
    got = conn.execute(
        "SELECT id, json_extract(cs_json(meta), '$.tag'), json_extract(cs_json(meta), '$.n'),"
        " json_extract(cs_json(meta), '$.a'), json_extract(cs_json(meta), '$.inf') FROM t ORDER BY id"
    ).fetchall()
    assert got == [
        (1, "é😀", 3, None, math.inf),
        (2, "text", 4, None, None),
        (3, None, None, None, None),
        (4, None, None, None, None),
        (5, None, None, 'x"y', None),
    ]
    assert conn.execute("SELECT id FROM t WHERE json_extract(cs_json(meta), '$.n') > 3").fetchall() == [(2,)]
    conn.close()


# --- cross-check against a SQLite that has jsonb(), when one is installed ----


@pytest.fixture(scope="module")
def sqlite_jsonb():
    """(jsonb, json) callables backed by a SQLite >= 3.45 (stdlib sqlite3 or apsw), else skip."""
    if sqlite3.sqlite_version_info >= (3, 45, 0):
        conn = sqlite3.connect(":memory:")
        one = lambda sql, arg: conn.execute(sql, (arg,)).fetchone()[0]  # noqa: E731
    else:
        apsw = pytest.importorskip("apsw", reason="no SQLite >= 3.45 (stdlib sqlite3 or apsw) to cross-check")
        conn = apsw.Connection(":memory:")
        one = lambda sql, arg: next(conn.execute(sql, (arg,)))[0]  # noqa: E731
    return (lambda text: one("SELECT jsonb(?)", text)), (lambda blob: one("SELECT json(?)", blob))


CROSS_CHECK_JSON = [
    "null", "true", "false", "0", "-12", "123456789012345678901234567890", "2.5", "-1E-7", "1e+300",
    '""', '"plain"', '"é😀"', '"a\\nb\\"c\\\\d\\/e\\u00e9\\ud83d\\ude00"', '"\\u0001\\b\\f\\r\\t"',
    "[]", "{}", '[1,[2,[3,[4]]],{"a":{"b":null}}]', '{"a":1,"b":[true,false],"c":"x","d":{"e":[]}}',
    '["' + "a" * 300 + '", "' + "b" * 70_000 + '"]',
]
CROSS_CHECK_JSON5 = [  # SQLite writes INT5/FLOAT5/TEXT5 and its NaN/Infinity encodings for these
    "[0x1F,-0x1f,+5,.5,5.,+1.5,-.5e3,Infinity,-Infinity,NaN]",
    "['single \\'quoted\\'', \"\\x41\\v\\0\", 'line\\\ncontinued']",
    "{unquoted: 1, 'sq': 2, trailing: [1,2,],}",
]


def test_cross_check_decoder_with_sqlite(sqlite_jsonb):
    jsonb, to_json = sqlite_jsonb
    for text in CROSS_CHECK_JSON + CROSS_CHECK_JSON5:
        blob = jsonb(text)
        expected = json.loads(to_json(blob))  # json.loads reads SQLite's 9e999 as inf
        assert decode_jsonb(blob) == expected, text
        assert json.loads(jsonb_to_json_text(blob)) == expected, text


def test_cross_check_encoder_with_sqlite(sqlite_jsonb):
    jsonb, _ = sqlite_jsonb
    objs = ROUND_TRIP + [json.loads(t) for t in CROSS_CHECK_JSON] + [[math.inf, math.nan, -math.inf, -0.0]]
    for obj in objs:
        assert encode_jsonb(obj) == jsonb(json.dumps(obj, ensure_ascii=False)), repr(obj)[:80]
