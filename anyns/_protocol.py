"""The zygote wire protocol: sans-IO encoding shared by the zygote and the supervisor.

Transport: one ``SOCK_SEQPACKET`` socket pair, so each message is one datagram
and needs no framing; file descriptors travel as SCM_RIGHTS. Never pickle.

Every message starts with a fixed header ``struct.pack("=4sII", tag, a, b)``;
the common messages are nothing more, so the zygote decodes and encodes them
without allocating much (every page it writes between two clones is copied
again, docs/spawn-path.md §4). JSON appears only in rare messages.

supervisor → zygote
    ``SPWN`` a=request id, b=plan id; then, the first time a plan id is used
    on this zygote, the plan (``Plan.to_wire()``) as JSON. fds: stdin,
    stdout, stderr, error pipe.
    ``PART`` a=plan id, b=piece number: a piece of a plan too large for one
    datagram; the SPWN that follows carries the last piece and the fds.
    ``DROP`` a=0, b=plan id: forget a plan (the supervisor's cache let it go).
zygote → supervisor
    ``HELO`` a=protocol version, b=zygote pid; once, when ready.
    ``DONE`` a=request id, b=container pid; fds: the pidfd.
    ``FAIL`` a=request id, b=errno; then JSON ``{"step", "call", "path", "message"}``.

The child reports a setup failure on its close-on-exec error pipe as one
record (``encode_failure``); EOF with no record means execve succeeded.
"""

from __future__ import annotations

import _json
import struct

# The zygote must stay small: typing is imported only by type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

PROTOCOL_VERSION: Final = 2
#: fds that may ride on one message
MAX_FDS: Final = 16
#: the largest datagram either side sends (well under an AF_UNIX socket's
#: default send buffer); larger plans travel in PART pieces
MAX_MESSAGE: Final = 1 << 16
#: the largest failure record the child writes
MAX_FAILURE: Final = 4096

SPAWN: Final = b"SPWN"
HELLO: Final = b"HELO"
DONE: Final = b"DONE"
FAIL: Final = b"FAIL"
DROP: Final = b"DROP"
PART: Final = b"PART"

_HEADER: Final = struct.Struct("=4sII")
HEADER_SIZE: Final = _HEADER.size
_SEP: Final = b"\0"
_U32: Final = 0xFFFFFFFF


def dumps(value: Any) -> str:
    """JSON for the plain values messages carry (dict, list, tuple, str, int, bool, None).

    Written out here, not ``json.dumps``: the json package pulls ``re`` and
    ``enum`` into the zygote, and every megabyte there makes each clone slower.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json.encode_basestring_ascii(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot encode {type(value).__name__} in a message")


class _ScanContext:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not allowed in a message")


_scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]  # duck-typed JSONDecoder


def _loads(text: str) -> Any:
    try:
        value, end = _scan(text, 0)
    except StopIteration as e:
        raise ValueError(f"invalid JSON at offset {e.value}") from None
    if end != len(text):
        raise ValueError(f"trailing data at offset {end}")
    return value


def encode(tag: bytes, a: int, b: int, body: dict[str, Any] | None = None) -> bytes:
    """One message: the header, then ``body`` as JSON if given."""
    header = _HEADER.pack(tag, a & _U32, b & _U32)
    if body is None:
        return header
    return header + dumps(body).encode()


def encode_spawn(request_id: int, plan_id: int, body: dict[str, Any] | None) -> list[bytes]:
    """The messages of one spawn request: PART pieces of a large plan, then SPWN.

    A plan with thousands of mounts does not fit in one datagram (the socket's
    send buffer bounds it), so its JSON travels in pieces of ``MAX_MESSAGE``.
    """
    if body is None:
        return [encode(SPAWN, request_id, plan_id)]
    text = dumps(body).encode()
    room = MAX_MESSAGE - HEADER_SIZE
    pieces = [text[i:i + room] for i in range(0, len(text), room)]
    parts = [_HEADER.pack(PART, plan_id & _U32, i) + piece for i, piece in enumerate(pieces[:-1])]
    return [*parts, _HEADER.pack(SPAWN, request_id & _U32, plan_id & _U32) + pieces[-1]]


def decode_header(data: bytes | bytearray | memoryview) -> tuple[bytes, int, int]:
    """``(tag, a, b)`` of a message.

    Raises:
        ValueError: a truncated header.
    """
    if len(data) < HEADER_SIZE:
        raise ValueError(f"truncated message ({len(data)} bytes)")
    tag, a, b = _HEADER.unpack_from(data)
    return tag, a, b


def decode_body(payload: bytes) -> dict[str, Any]:
    """The JSON object after a header.

    Raises:
        ValueError: not UTF-8, not JSON, or not an object.
    """
    try:
        text = payload.decode()
    except UnicodeDecodeError as e:
        raise ValueError(f"message body is not UTF-8: {e}") from None
    body = _loads(text)
    if not isinstance(body, dict):
        raise ValueError("message body is not a JSON object")
    return body


def decode(data: bytes) -> tuple[bytes, int, int, dict[str, Any] | None]:
    """Split a whole message into ``(tag, a, b, body)``.

    Raises:
        ValueError: truncated header or a body that is not a JSON object.
    """
    tag, a, b = decode_header(data)
    if len(data) == HEADER_SIZE:
        return tag, a, b, None
    return tag, a, b, decode_body(data[HEADER_SIZE:])


def encode_failure(step: str, call: str, path: str | None, errno: int, message: str) -> bytes:
    """The child's failure record: NUL-separated fields, truncated to MAX_FAILURE."""
    fields = (step, call, path or "", str(errno), message)
    return _SEP.join(f.encode("utf-8", "surrogateescape").replace(_SEP, b" ") for f in fields)[:MAX_FAILURE]


def decode_failure(data: bytes) -> tuple[str, str, str | None, int, str]:
    """Parse a failure record into ``(step, call, path, errno, message)``."""
    parts = data.split(_SEP, 4)
    if len(parts) != 5:
        return ("unknown", "unknown", None, 0, data.decode("utf-8", "replace"))
    step, call, path, errno, message = (p.decode("utf-8", "replace") for p in parts)
    try:
        number = int(errno)
    except ValueError:
        number = 0
    return step, call, path or None, number, message
