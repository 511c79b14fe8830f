"""Reading /proc/PID/stat, shared by the leak check (conftest.py) and the integration helpers."""

from __future__ import annotations

import os


def _stat_fields(pid: int | str) -> tuple[str, list[bytes]] | None:
    """(comm, the fields after it starting with state) of /proc/PID/stat, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:  # exited meanwhile
        return None
    close = data.rindex(b")")  # comm may itself contain ") "
    return data[data.index(b"(") + 1 : close].decode(errors="replace"), data[close + 2 :].split()


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` ("R", "S", "Z", ...), or None once it no longer exists."""
    stat = _stat_fields(pid)
    return None if stat is None else stat[1][0].decode()


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, comm) for every process we can read."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _stat_fields(name)) is not None:
            comm, fields = stat
            table[int(name)] = (int(fields[1]), fields[0].decode(), comm)
    return table
