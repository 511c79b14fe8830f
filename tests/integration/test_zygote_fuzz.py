"""The zygote survives garbled, truncated and nonsensical requests, and keeps serving."""

from __future__ import annotations

import json
import os
import random
import socket
import struct

import anyns
from anyns import _protocol

HEADER = struct.Struct("=4sII")


def _cases(rng: random.Random) -> list[bytes]:
    """Malformed messages: noise, short headers, unknown tags, bad bodies, plausible-but-wrong plans."""
    tags = [b"SPWN", b"PART", b"DROP", b"HELO", b"DONE", b"????"]
    bodies: list[object] = [
        None, 5, "x", [], {}, {"ops": 5}, {"ops": [[]]}, {"ops": [["a", "b", None, []]]},
        {"flags": "x", "ops": []}, {"flags": 0, "ops": [], "extra": 99}, {"flags": 0, "ops": [], "enter": [[7, 1]]},
        {"flags": 0, "ops": [], "skeleton": [[]]}, {"flags": 0, "ops": [], "skeleton": [["bind"]]},
        {"flags": 0, "ops": [["exec", "execve", None, [[], [], []]]], "extra": -1},
        {"flags": 1 << 70, "ops": []}, {"flags": 0, "ops": [["x"] * 4] * 3},
    ]
    out = [b"", b"S", b"SPWN", HEADER.pack(b"SPWN", 1, 2)[:-1]]
    for body in bodies:
        out.append(HEADER.pack(b"SPWN", rng.randrange(1 << 32), rng.randrange(1 << 32)) + json.dumps(body).encode())
    for _ in range(200):
        kind = rng.randrange(4)
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(64)))
        elif kind == 1:
            out.append(HEADER.pack(rng.choice(tags), rng.randrange(1 << 32), rng.randrange(1 << 32))
                       + rng.randbytes(rng.randrange(200)))
        elif kind == 2:
            out.append(HEADER.pack(b"SPWN", rng.randrange(1 << 32), rng.randrange(1 << 32))
                       + b'{"flags": 0, "ops": [' + rng.randbytes(rng.randrange(40)))
        else:
            out.append(HEADER.pack(b"PART", rng.randrange(8), rng.randrange(3)) + rng.randbytes(rng.randrange(100)))
    return out


async def test_zygote_survives_fuzzed_requests(sup: anyns.Supervisor) -> None:
    """Hundreds of malformed requests (with and without fds): the same zygote still spawns correctly."""
    spec = anyns.ContainerSpec(argv=["echo", "alive"])
    assert (await sup.run(spec, capture_stdout=True)).stdout == b"alive\n"
    assert sup._zygote is not None
    zygote = sup._zygote
    rng = random.Random(1234)
    cases = _cases(rng)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for i, message in enumerate(cases):
            fds = [null] * (i % 6)  # none, or some, or too many for any plan
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
            await zygote.sock.sendmsg([message], ancillary)
    finally:
        os.close(null)
    done = await sup.run(spec, capture_stdout=True)

    assert done.stdout == b"alive\n"
    assert sup._zygote is zygote and zygote.error is None  # never replaced: it never died
    assert zygote.process.poll() is None
    assert len(cases) > 200
    assert _protocol.MAX_FDS >= 6
