"""A supervisor of many containers holds fds past select's FD_SETSIZE: pidfd checks must not use select."""

from __future__ import annotations

import os
import resource

from anyns import _container


def test_has_exited_works_on_an_fd_past_1024() -> None:
    """_has_exited on a pidfd numbered 2000 (select raised ValueError there): a live process has not exited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 2000 and hard > 2000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2001, hard))
    pidfd = os.pidfd_open(os.getpid())
    try:
        high = os.dup2(pidfd, 2000)
        try:
            assert _container._has_exited(high) is False
        finally:
            os.close(high)
    finally:
        os.close(pidfd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
