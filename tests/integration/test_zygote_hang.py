"""A zygote that stops answering is killed; what it held fails with ZygoteError and the next spawn works."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
import trio

import anyns
from anyns import _zygote_client


async def test_hung_zygote_is_replaced(sup: anyns.Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped zygote fails the spawn in flight within the answer timeout; the next spawn succeeds."""
    monkeypatch.setattr(_zygote_client, "ANSWER_TIMEOUT", 1.5)
    spec = anyns.ContainerSpec(argv=["true"])
    await sup.run(spec)
    assert sup._zygote is not None
    hung = sup._zygote.process.pid
    os.kill(hung, signal.SIGSTOP)  # alive, never answering
    try:
        with trio.fail_after(10), pytest.raises(anyns.ZygoteError, match="did not answer"):
            await sup.run(spec)
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed and reaped already, as it should be
            os.kill(hung, signal.SIGCONT)
    done = await sup.run(spec)

    assert done.returncode == 0
    assert sup._zygote.process.pid != hung
