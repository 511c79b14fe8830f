"""What a change costs: the same anyns workloads from two source trees, alternated, in one run.

    git worktree add /tmp/anyns-before <rev>      # the tree to compare with (built if it has C parts)
    python -m benchmarks.revisions --before /tmp/anyns-before --after .

Each round starts one fresh interpreter per tree (``PYTHONPATH`` = the tree),
which starts and reaps ``--n`` containers running ``/bin/true`` at
``--concurrency`` in flight for each workload, and prints containers/s. The
trees alternate round by round (before, after, after, before, …) so drift of
the machine falls on both; the summary is the median per workload and the
ratio after/before (above 1: the change made it faster).

Workloads (``--workloads``): ``defaults`` (HostRootfs, init, hardening),
``dir-rootfs`` (a read-only busybox ``DirRootfs``: the fd-resolved setup of a
root another container might write), ``binds`` (defaults plus 8 writable
binds), ``no-seccomp`` (defaults with ``seccomp=None``), ``lean`` (no
hardening: bwrap's amount of work).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

WORKLOADS = ("defaults", "dir-rootfs", "binds", "no-seccomp", "lean")

# Run in a fresh interpreter of one tree: prints {"workload": containers_per_second, ...}.
_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import trio, anyns
    from anyns import testing

    n, concurrency, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    workloads = sys.argv[4].split(",")

    def spec_of(name):
        true = anyns.ContainerSpec(argv=["/bin/true"])
        if name == "defaults":
            return true
        if name == "dir-rootfs":
            root = os.path.join(workdir, "root")
            if not os.path.exists(os.path.join(root, "bin", "busybox")):
                testing.busybox_rootfs(root)
            return anyns.ContainerSpec(argv=["/bin/true"], rootfs=anyns.DirRootfs(root), env={"PATH": "/bin"})
        if name == "binds":
            dirs = [os.path.join(workdir, f"bind{i}") for i in range(8)]
            for d in dirs:
                os.makedirs(d, exist_ok=True)
            return anyns.ContainerSpec(argv=["/bin/true"],
                                       mounts=[anyns.Bind(d, f"/b{i}") for i, d in enumerate(dirs)])
        if name == "no-seccomp":
            return anyns.ContainerSpec(argv=["/bin/true"], seccomp=None)
        if name == "lean":
            return anyns.ContainerSpec(argv=["/bin/true"], seccomp=None, capabilities=anyns.ALL_CAPABILITIES,
                                       no_new_privileges=False, masked_paths=(), readonly_paths=())
        raise SystemExit(f"unknown workload {name}")

    async def rate(sup, spec, count):
        limiter = trio.CapacityLimiter(concurrency)
        async def one():
            async with limiter:
                await sup.run(spec)
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
        return count / (time.perf_counter() - start)

    async def main():
        out = {}
        async with anyns.open_supervisor() as sup:
            for name in workloads:
                spec = spec_of(name)
                await rate(sup, spec, 20)  # warm-up: plan cache, skeleton
                out[name] = await rate(sup, spec, n)
        print(json.dumps(out))

    trio.run(main)
    """
)


def _round(tree: str, args: argparse.Namespace, workdir: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(args.n), str(args.concurrency), workdir, ",".join(args.workloads)],
        env=env, cwd=workdir, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the round failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.revisions", description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the source tree to compare with")
    parser.add_argument("--after", default=".", help="the source tree of the change (default: .)")
    parser.add_argument("--n", type=int, default=500, help="containers per workload per round (default 500)")
    parser.add_argument("--concurrency", type=int, default=16, help="in flight (default 16)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per tree (default 4)")
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=list(WORKLOADS),
                        help=f"comma-separated, of {','.join(WORKLOADS)} (default all)")
    parser.add_argument("--json", help="where to write the per-round figures and the summary")
    args = parser.parse_args(argv)
    rates: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory(prefix="anyns-revisions-") as workdir:
        for i in range(args.rounds):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for which in order:
                tree = args.before if which == "before" else args.after
                for name, value in _round(tree, args, workdir).items():
                    rates[which].setdefault(name, []).append(value)
                print(f"round {i + 1} {which}: " + ", ".join(
                    f"{k} {v[-1]:.0f}/s" for k, v in rates[which].items()), flush=True)
    print(f"\n{'workload':<12} {'before/s':>9} {'after/s':>9} {'after/before':>13}")
    summary = {}
    for name in args.workloads:
        before = statistics.median(rates["before"][name])
        after = statistics.median(rates["after"][name])
        summary[name] = {"before": before, "after": after, "ratio": after / before}
        print(f"{name:<12} {before:>9.0f} {after:>9.0f} {after / before:>13.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rates": rates, "summary": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
