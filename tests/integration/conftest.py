"""Every integration test needs the capability and runs under the leak check."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _guard(integration_guard: None) -> None:
    """Apply ``integration_guard`` (tests/conftest.py) to every test here."""
