"""Every integration test needs the capability and runs under the leak check."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable

import pytest

from anyns import testing


@pytest.fixture(autouse=True)
def _guard(integration_guard: None) -> None:
    """Apply ``integration_guard`` (tests/conftest.py) to every test here."""


@pytest.fixture
def busybox_and_ip(skip_or_fail: Callable[[str], None]) -> None:
    """Skip (or fail) unless a static busybox (overlay roots) and ip/nsenter (counting veths) are here."""
    try:
        testing.find_static_busybox()
    except testing.BusyboxMissing as e:
        skip_or_fail(str(e))
    for tool in ("/usr/sbin/ip", "/usr/bin/nsenter"):
        if not os.path.exists(tool):
            skip_or_fail(f"{tool} is needed to see the veths")


@pytest.fixture
def make_busybox_root(skip_or_fail: Callable[[str], None]) -> Callable[[pathlib.Path], pathlib.Path]:
    """``make(dest)``: a tiny root filesystem directory at ``dest`` (``anyns.testing.busybox_rootfs``);
    skips (fails under ANYNS_MUST_WORK=1) without a static busybox."""

    def make(dest: pathlib.Path) -> pathlib.Path:
        try:
            return pathlib.Path(testing.busybox_rootfs(dest))
        except testing.BusyboxMissing as e:
            skip_or_fail(f"{e} (Debian package busybox-static)")
            raise

    return make
