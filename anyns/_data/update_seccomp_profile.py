"""Refresh ``seccomp_default.json`` (Docker's default seccomp profile) and ``seccomp_default.commit``.

A maintainer's script, never run by the library or by CI::

    python anyns/_data/update_seccomp_profile.py                    # GitHub: moby/profiles, main
    python anyns/_data/update_seccomp_profile.py --ref seccomp/v0.2.3
    python anyns/_data/update_seccomp_profile.py --checkout ~/src/profiles   # or a moby checkout

The profile lives in github.com/moby/profiles (``seccomp/default.json``)
since July 2025; moby vendors it (``vendor/github.com/moby/profiles/...``)
and held it at ``profiles/seccomp/default.json`` before. From a checkout the
committed file at HEAD is taken, with the last commit that changed it.
The file is stored verbatim; the script refuses a profile that allows
io_uring (moby#46762 removed it: an older copy) or that the interpreter
(``anyns._seccomp_profile``) cannot read, and prints what changed in the
allowed set for the default capabilities. Review the diff, run the tests
(tests/unit/test_seccomp_rules.py, tests/integration/test_seccomp_profile.py)
and note the update in the changelog.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PROFILE = os.path.join(HERE, "seccomp_default.json")
COMMIT = os.path.join(HERE, "seccomp_default.commit")
REPOSITORY = "moby/profiles"
PATH = "seccomp/default.json"
#: where the file sits in the checkouts this script knows, newest layout first
CHECKOUT_PATHS = (PATH, "vendor/github.com/moby/profiles/seccomp/default.json", "profiles/seccomp/default.json")


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "anyns-update-seccomp-profile"})
    with urllib.request.urlopen(request, timeout=30) as response:
        data: bytes = response.read()
        return data


def from_github(ref: str) -> tuple[bytes, dict[str, str]]:
    """The profile at ``ref`` of moby/profiles, and the last commit that changed it."""
    api = f"https://api.github.com/repos/{REPOSITORY}/commits?path={PATH}&sha={ref}&per_page=1"
    commit = json.loads(_get(api))[0]
    sha = commit["sha"]
    data = _get(f"https://raw.githubusercontent.com/{REPOSITORY}/{sha}/{PATH}")
    return data, {"repository": f"https://github.com/{REPOSITORY}", "path": PATH, "commit": sha,
                  "date": commit["commit"]["committer"]["date"]}


def from_checkout(checkout: str) -> tuple[bytes, dict[str, str]]:
    """The committed profile at HEAD of a moby/profiles or moby checkout, and the last commit that changed it."""
    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", checkout, *args], check=True, capture_output=True).stdout

    for path in CHECKOUT_PATHS:
        try:
            data = git("show", f"HEAD:{path}")
        except subprocess.CalledProcessError:
            continue
        sha, date = git("log", "-1", "--format=%H %cI", "HEAD", "--", path).decode().split()
        remote = git("config", "--get", "remote.origin.url").decode().strip() if _has_origin(checkout) else checkout
        return data, {"repository": remote, "path": path, "commit": sha, "date": date}
    raise SystemExit(f"{checkout}: none of {', '.join(CHECKOUT_PATHS)} is committed there")


def _has_origin(checkout: str) -> bool:
    return subprocess.run(["git", "-C", checkout, "config", "--get", "remote.origin.url"],
                          capture_output=True).returncode == 0


def _allowed(profile: dict[str, Any]) -> set[str]:
    """Syscalls the profile allows unconditionally on x86_64 with Docker's default capabilities."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    from anyns import _seccomp_profile as P
    from anyns._security_defaults import DEFAULT_CAPABILITIES

    rules = P.policy(profile, DEFAULT_CAPABILITIES, native="x86_64", kernel=(6, 18))
    return {name for name, found in rules.named.items() if found == ((P.ACT_ALLOW, ()),)}


def check(data: bytes) -> dict[str, Any]:
    """The parsed profile, if this library can use it."""
    profile: dict[str, Any] = json.loads(data)
    allowed = {n for e in profile["syscalls"] if e["action"] == "SCMP_ACT_ALLOW" for n in e.get("names") or ()}
    uring = sorted(n for n in allowed if n.startswith("io_uring"))
    if uring:
        raise SystemExit(f"this profile allows {', '.join(uring)}: a copy older than moby#46762")
    if profile.get("defaultAction") != "SCMP_ACT_ERRNO":
        raise SystemExit(f"unexpected defaultAction {profile.get('defaultAction')!r}: the filter maps SCMP_ACT_ERRNO")
    _allowed(profile)  # raises on an action or comparison the interpreter does not know
    return profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ref", default="main", help="a branch, tag or commit of moby/profiles (default: main)")
    source.add_argument("--checkout", help="a local git checkout of moby/profiles or moby/moby instead of GitHub")
    args = parser.parse_args(argv)
    data, meta = from_checkout(args.checkout) if args.checkout else from_github(args.ref)
    profile = check(data)
    with open(PROFILE, "rb") as f:
        before = _allowed(json.load(f))
    after = _allowed(profile)
    with open(PROFILE, "wb") as f:
        f.write(data)
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    with open(COMMIT, "w") as f:
        f.writelines(f"{key}: {value}\n" for key, value in meta.items())
    print(f"{PROFILE}: {meta['repository']} {meta['commit']} ({meta['date']})")
    print(f"  newly allowed: {', '.join(sorted(after - before)) or '-'}")
    print(f"  no longer allowed: {', '.join(sorted(before - after)) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
