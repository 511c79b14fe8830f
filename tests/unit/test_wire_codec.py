"""The zygote wire protocol (sans-IO): messages and the child's failure records round-trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anyns import _protocol as P

U32 = st.integers(0, 0xFFFFFFFF)
TAGS = st.sampled_from([P.SPAWN, P.HELLO, P.DONE, P.FAIL])
#: what message bodies carry: JSON without floats
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
bodies = st.dictionaries(st.text(), json_values, max_size=6)
#: text as the child's failure fields carry it: no NUL, no lone surrogates
field = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                max_size=200)


@given(TAGS, U32, U32, st.none() | bodies)
def test_message_round_trip(tag: bytes, a: int, b: int, body: dict[str, Any] | None) -> None:
    """decode(encode(tag, a, b, body)) gives back exactly what was encoded."""
    data = P.encode(tag, a, b, body)
    assert isinstance(data, bytes)
    assert P.decode(data) == (tag, a, b, body)


@given(bodies)
def test_body_is_standard_json(body: dict[str, Any]) -> None:
    """The hand-written encoder writes JSON the standard library reads back unchanged."""
    data = P.encode(P.SPAWN, 1, 2, body)
    assert json.loads(data[P.HEADER_SIZE:]) == body


@given(bodies)
def test_decoder_reads_standard_json(body: dict[str, Any]) -> None:
    """The decoder reads bodies written by json.dumps (any spacing) unchanged."""
    header = P.encode(P.FAIL, 7, 2)
    for text in (json.dumps(body), json.dumps(body, indent=1, ensure_ascii=False)):
        assert P.decode(header + text.encode()) == (P.FAIL, 7, 2, body)


def test_tuples_encode_as_lists() -> None:
    """Tuples (as in plans) travel as JSON arrays."""
    data = P.encode(P.SPAWN, 1, 1, {"ops": (("a", 1, None), ())})
    assert P.decode(data)[3] == {"ops": [["a", 1, None], []]}


@pytest.mark.parametrize("body", [b"[1, 2]", b'"op"', b"3", b"{", b'{"a": 1} x', b"\xff\xfe",
                                  b'{"a": NaN}', b'{"a": Infinity}'])
def test_bad_bodies_are_value_errors(body: bytes) -> None:
    """A body that is not one UTF-8 JSON object (no NaN) raises ValueError."""
    with pytest.raises(ValueError):
        P.decode(P.encode(P.SPAWN, 1, 1) + body)


@given(st.binary(max_size=P.HEADER_SIZE - 1))
def test_truncated_header_is_value_error(data: bytes) -> None:
    """Fewer bytes than a header raise ValueError."""
    with pytest.raises(ValueError):
        P.decode(data)


@given(st.binary(max_size=64))
def test_decode_raises_only_value_error(data: bytes) -> None:
    """Arbitrary bytes decode or raise ValueError: nothing else escapes."""
    try:
        tag, a, b, body = P.decode(data)
    except ValueError:
        return
    assert len(tag) == 4 and 0 <= a <= 0xFFFFFFFF and 0 <= b <= 0xFFFFFFFF
    assert body is None or isinstance(body, dict)


def test_unencodable_values_are_type_errors() -> None:
    """Values JSON cannot carry faithfully (floats, sets, bytes) are refused, not mangled."""
    for value in (1.5, {1}, b"x"):
        with pytest.raises(TypeError):
            P.encode(P.SPAWN, 1, 1, {"v": value})


@given(field, field, st.none() | field.filter(bool), st.integers(0, 4095), field)
def test_failure_record_round_trip(step: str, call: str, path: str | None, errno: int,
                                   message: str) -> None:
    """decode_failure(encode_failure(...)) gives the fields back (short records)."""
    data = P.encode_failure(step, call, path, errno, message)
    assert len(data) <= P.MAX_FAILURE
    assert P.decode_failure(data) == (step, call, path, errno, message)


def test_failure_record_nul_becomes_space() -> None:
    """A NUL inside a field cannot shift the fields: it becomes a space."""
    data = P.encode_failure("mounts", "mount", "/a\0b", 2, "no\0such")
    assert P.decode_failure(data) == ("mounts", "mount", "/a b", 2, "no such")


@given(field.filter(bool))
def test_failure_record_is_truncated(chunk: str) -> None:
    """Long records are cut to MAX_FAILURE bytes; the leading fields survive intact."""
    message = chunk * (P.MAX_FAILURE // len(chunk.encode()) + 1)
    data = P.encode_failure("exec", "execve", "/bin/x", 13, message)
    assert len(data) == P.MAX_FAILURE
    step, call, path, errno, text = P.decode_failure(data)
    assert (step, call, path, errno) == ("exec", "execve", "/bin/x", 13)
    assert text and message.startswith(text.rstrip("\ufffd"))


@pytest.mark.parametrize("data", [b"", b"garbage", b"a\0b\0c", "ünïcode".encode()])
def test_malformed_failure_record(data: bytes) -> None:
    """A record without five fields decodes to an 'unknown' failure keeping the text."""
    assert P.decode_failure(data) == ("unknown", "unknown", None, 0,
                                      data.decode("utf-8", "replace"))


def test_failure_record_with_bad_errno() -> None:
    """A non-numeric errno field decodes as 0."""
    assert P.decode_failure(b"s\0c\0\0x\0m") == ("s", "c", None, 0, "m")
