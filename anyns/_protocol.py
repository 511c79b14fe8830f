"""The zygote wire protocol: sans-IO encoding shared by the zygote and the supervisor.

Transport: one ``SOCK_SEQPACKET`` socket pair, so each message is one datagram
and needs no framing; file descriptors travel as SCM_RIGHTS. Messages are
JSON objects (never pickle) with an ``"op"`` tag:

supervisor → zygote
    ``spawn``  ``{"op", "id", "plan", "body"?}`` + fds ``[stdin, stdout, stderr, errpipe]``;
               ``body`` (``Plan.to_wire()``) is sent the first time a plan id is used
zygote → supervisor
    ``hello``   ``{"op", "version", "pid"}`` once, when ready
    ``spawned`` ``{"op", "id", "pid"}`` + fds ``[pidfd]``
    ``failed``  ``{"op", "id", "step", "call", "path", "errno", "message"}``

The child reports a setup failure on its close-on-exec error pipe as one
record (``encode_failure``); EOF with no record means execve succeeded.
"""

from __future__ import annotations

import json

# The zygote must stay small: typing is imported only by type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

PROTOCOL_VERSION: Final = 1
#: fds that may ride on one message
MAX_FDS: Final = 8
#: the largest datagram either side sends (a plan body with hundreds of mounts fits)
MAX_MESSAGE: Final = 1 << 20
#: the largest failure record the child writes (well under PIPE_BUF multiples; read to EOF anyway)
MAX_FAILURE: Final = 4096

_SEP: Final = b"\0"


def encode(message: dict[str, Any]) -> bytes:
    """Encode one message."""
    return json.dumps(message, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any]:
    """Decode one message; raises ValueError on anything that is not a tagged JSON object."""
    message = json.loads(data)
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ValueError("not an anyns message")
    return message


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
