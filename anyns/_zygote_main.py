"""Entry point of the zygote process: ``python -I -S _zygote_main.py FD PID PKGDIR NEWROOT [CGROUP_PARENT]``.

It imports ``anyns._zygote`` without running ``anyns/__init__.py`` (which
imports trio): a bare package module pointing at PKGDIR stands in for it.
Running a file by path, rather than ``-m``, also works for an editable install
(``-S`` skips the ``.pth`` files that would make ``anyns`` importable), and puts
"zygote" in the command line, where ``ps`` shows it.
"""

import sys
import types

if __name__ == "__main__":
    package = types.ModuleType("anyns")
    package.__path__ = [sys.argv[3]]
    sys.modules["anyns"] = package

    from anyns._zygote._server import main

    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "")
