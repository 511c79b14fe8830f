"""Build anyns: the Python package and its native core, two small C programs.

The metadata lives in pyproject.toml; this file only adds the build step
(plain setuptools: two C files with no Python headers need no build system
of their own, and one build serves every CPython 3).

``anyns/_native/spawn.c`` is compiled with ``$CC`` or ``cc`` into the shared
library ``anyns/_native/libanyns-spawn.so``, which the zygote loads with
ctypes: it runs each container's setup in the cloned child (see its header).
``anyns/_native/init.c`` is compiled with the system C compiler into
``anyns/_native/anyns-init``: statically linked, so it runs in any container
root, a busybox directory without a libc too. The compiler is ``$ANYNS_INIT_CC``
if set, else ``musl-gcc`` where it is installed (Debian: musl-tools), else
``$CC`` or ``cc``. musl is preferred because the init is exec'd once per
container: a static musl program starts in about 0.07 ms, a static glibc one
in about 0.66 ms on a 2-vCPU VM (glibc probes the CPU caches with CPUID at
start-up, and each CPUID traps to the hypervisor). A wheel
holds it beside the package (in place for an editable install), which makes
the wheel platform-specific (``py3-none-<platform>``: any CPython 3, no
extension module).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py
from setuptools.errors import CompileError

try:  # setuptools >= 70.1 has its own
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # older: the wheel package's
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join("anyns", "_native", "init.c")
BINARY = os.path.join("anyns", "_native", "anyns-init")
CFLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra")
SPAWN_SOURCE = os.path.join("anyns", "_native", "spawn.c")
LIBRARY = os.path.join("anyns", "_native", "libanyns-spawn.so")
# No stack protector (its canary is thread state the CLONE_VM child must not rely on), no loops turned
# into libc calls, every symbol bound at load (-z now: a cloned child must never enter the dynamic linker).
SPAWN_CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-fno-stack-protector",
                "-fno-tree-loop-distribute-patterns", "-fvisibility=hidden", "-Wl,-z,now", "-Wl,-z,noexecstack", "-s")
HINT = ("anyns: building the container init (anyns/_native/init.c) needs a C compiler and the static C "
        "library (libc.a); on Debian or Ubuntu: apt-get install build-essential (and musl-tools, for an init "
        "that starts ten times faster)")


def compile_init(target: str) -> None:
    """Compile the init into ``target`` (replaced at once: a running zygote may be reading the old one).

    Raises:
        CompileError: no compiler, no libc.a, or the compiler failed (one line, with the fix).
    """
    compiler = shlex.split(os.environ.get("ANYNS_INIT_CC") or ("musl-gcc" if shutil.which("musl-gcc") else "")
                           or os.environ.get("CC") or "cc")
    _compile(compiler, CFLAGS, SOURCE, target, HINT)


def compile_spawn_library(target: str) -> None:
    """Compile the native spawn core into ``target`` (replaced at once, like the init).

    Raises:
        CompileError: no compiler, or the compiler failed (one line, with the fix).
    """
    _compile(shlex.split(os.environ.get("CC") or "cc"), SPAWN_CFLAGS, SPAWN_SOURCE, target, SPAWN_HINT)


def _compile(compiler: list[str], flags: tuple[str, ...], source: str, target: str, hint: str) -> None:
    """``compiler flags -o target source``, through a scratch file renamed onto ``target``.

    Raises:
        CompileError: no compiler, or it failed: ``hint`` and the line of its output that says why.
    """
    if not compiler or shutil.which(compiler[0]) is None:
        raise CompileError(f"{hint} (no C compiler {compiler[0] if compiler else ''!r} found)")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=".anyns-build-", dir=os.path.dirname(target))
    os.close(fd)
    try:
        done = subprocess.run([*compiler, *flags, "-o", scratch, os.path.join(HERE, source)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            # the line that says what is missing ("cannot find -lc" without libc.a), else the first error
            said = next((line for line in lines if "cannot find" in line), None) or next(
                (line for line in lines if "error" in line), lines[-1] if lines else "nothing")
            raise CompileError(f"{hint} ({' '.join(compiler)} said: {said})")
        os.chmod(scratch, 0o755)
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


SPAWN_HINT = ("anyns: building the native spawn core (anyns/_native/spawn.c) needs a C compiler; on Debian or "
              "Ubuntu: apt-get install build-essential")


class BuildPy(build_py):
    """build_py, then the native core beside the package (in the source tree for an editable install)."""

    def run(self) -> None:
        super().run()
        try:
            compile_init(self._target(BINARY))
            compile_spawn_library(self._target(LIBRARY))
        except CompileError as e:
            if getattr(self, "editable_mode", False):
                # setuptools turns an Exception from build_py into a warning for an editable
                # install, which would then "succeed" without the native core: stop for real.
                raise SystemExit(f"error: {e}") from None
            raise

    def _target(self, name: str) -> str:
        if getattr(self, "editable_mode", False):
            return os.path.join(HERE, name)
        return os.path.join(self.build_lib, name)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs += [os.path.join(self.build_lib, BINARY), os.path.join(self.build_lib, LIBRARY)]
        return outputs


class BinaryDistribution(Distribution):
    """Platform-specific (the init is compiled): built and installed as a platlib package."""

    def has_ext_modules(self) -> bool:
        return True


class BdistWheel(bdist_wheel):
    """A wheel with a compiled program but no extension module: any Python 3, this platform only."""

    def get_tag(self) -> tuple[str, str, str]:
        return "py3", "none", super().get_tag()[2]


setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel})
