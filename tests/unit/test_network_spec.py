"""Network specs: Bridge validation and gateway, ContainerSpec(network=...), namespaces and plans; no containers."""

from __future__ import annotations

import ipaddress
import pathlib
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import anyns
from anyns import Namespaces, _plan
from anyns._spec import effective_namespaces

NS = Namespaces
CLONE_NEWNET = 0x40000000
LAYOUT = _plan.HostLayout(newroot="/x")
NETNS = "/run/netns/hub"


class FakeContainer:
    """What JoinNetwork accepts in place of a running anyns.Container: a pid and namespaces."""

    pid = 12345
    namespaces: dict[str, str] = {}  # noqa: RUF012


def spec(**fields: Any) -> anyns.ContainerSpec:
    """Without the init: its status pipe is one more extra fd, which test_init_plan covers."""
    fields.setdefault("argv", ["/bin/true"])
    fields.setdefault("init", False)
    return anyns.ContainerSpec(**fields)


def compile_(**fields: Any) -> _plan.Plan:
    return _plan.compile_plan(spec(**fields), LAYOUT)


def index_of(ops: tuple[_plan.Op, ...], step: str, call: str) -> int:
    found = [i for i, op in enumerate(ops) if op[:2] == (step, call)]
    assert len(found) == 1, (step, call, found)
    return found[0]


# --------------------------------------------------------------------------- Bridge


def test_bridge_defaults() -> None:
    """Bridge() is anyns0 on 10.88.0.0/16 in the supervisor's own namespace, gateway 10.88.0.1/16."""
    bridge = anyns.Bridge()
    assert (bridge.name, bridge.subnet, bridge.netns) == ("anyns0", "10.88.0.0/16", None)
    assert bridge.network == ipaddress.IPv4Network("10.88.0.0/16")
    assert bridge.gateway == ipaddress.IPv4Interface("10.88.0.1/16")
    assert isinstance(bridge.gateway, ipaddress.IPv4Interface)


def test_bridge_takes_name_and_subnet_positionally_and_netns_by_keyword() -> None:
    """Bridge(name, subnet, *, netns): netns is keyword-only; a PathLike netns is stored as str."""
    bridge = anyns.Bridge("br-test", "192.168.7.0/24", netns=pathlib.Path(NETNS))
    assert (bridge.name, bridge.subnet, bridge.netns) == ("br-test", "192.168.7.0/24", NETNS)
    assert bridge.gateway == ipaddress.IPv4Interface("192.168.7.1/24")
    with pytest.raises(TypeError):
        anyns.Bridge("br-test", "192.168.7.0/24", NETNS)  # type: ignore[misc]


def test_bridge_is_a_frozen_hashable_value() -> None:
    """Equal bridges are equal and hash alike (the supervisor keys its address pools on them)."""
    a = anyns.Bridge("br0", "10.1.0.0/24", netns=NETNS)
    b = anyns.Bridge("br0", ipaddress.IPv4Network("10.1.0.0/24"), netns=pathlib.Path(NETNS))
    assert a == b and hash(a) == hash(b)
    assert a != anyns.Bridge("br0", "10.1.0.0/24")
    assert len({a, b, anyns.Bridge("br0", "10.2.0.0/24", netns=NETNS)}) == 2
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.name = "br1"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["a", "br0", "x" * 15, "anyns-test_1.2", "é" * 7])
def test_bridge_accepts_interface_names_up_to_15_bytes(name: str) -> None:
    """Names of 1 to 15 bytes (UTF-8) without '/', ':' or whitespace are valid."""
    assert anyns.Bridge(name).name == name


@pytest.mark.parametrize(
    "name",
    ["", "x" * 16, "é" * 8, "a/b", "a:b", "a b", "tab\tx", "new\nline", ".", "..", "nul\0x", 7, None],
    ids=["empty", "16-bytes", "16-bytes-utf8", "slash", "colon", "space", "tab", "newline", "dot",
         "dotdot", "nul", "int", "none"],
)
def test_bridge_rejects_bad_names(name: Any) -> None:
    """Names longer than 15 bytes (IFNAMSIZ - 1), empty, or with '/', ':', whitespace, NUL → SpecError."""
    with pytest.raises(anyns.SpecError) as info:
        anyns.Bridge(name)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("Bridge.name")


@pytest.mark.parametrize(
    "subnet",
    ["10.0.0.1/24", "10.0.0.0/31", "10.0.0.0/32", "fd00::/64", "::/0", "not a subnet", "10.0.0.0/33", ""],
    ids=["host-bits", "slash-31", "slash-32", "ipv6", "ipv6-all", "garbage", "prefix-33", "empty"],
)
def test_bridge_rejects_bad_subnets(subnet: str) -> None:
    """Host bits set, IPv6, no room for a gateway and a container (/31, /32), garbage → SpecError."""
    with pytest.raises(anyns.SpecError) as info:
        anyns.Bridge(subnet=subnet)
    assert str(info.value).startswith("Bridge.subnet")


def test_bridge_30_is_the_smallest_subnet() -> None:
    """A /30 is accepted: .1 is the gateway and .2 the one container address."""
    bridge = anyns.Bridge(subnet="10.9.9.4/30")
    assert bridge.gateway == ipaddress.IPv4Interface("10.9.9.5/30")


@pytest.mark.parametrize("netns", ["relative/path", "", "/run/netns/a\0b"])
def test_bridge_rejects_bad_netns_paths(netns: str) -> None:
    """Bridge.netns must be an absolute path without NUL."""
    with pytest.raises(anyns.SpecError) as info:
        anyns.Bridge(netns=netns)
    assert str(info.value).startswith("Bridge.netns")


@given(st.integers(0, 2**32 - 1), st.integers(0, 30))
def test_bridge_gateway_is_the_first_host_of_any_subnet(address: int, prefix: int) -> None:
    """For every IPv4 subnet up to /30 the gateway is network + 1, inside it, neither network nor broadcast."""
    network = ipaddress.IPv4Network((address, prefix), strict=False)
    bridge = anyns.Bridge(subnet=str(network))
    assert bridge.network == network
    assert bridge.gateway.network == network
    assert int(bridge.gateway.ip) == int(network.network_address) + 1
    assert bridge.gateway.ip not in (network.network_address, network.broadcast_address)


# --------------------------------------------------------------------------- ContainerSpec(network=...)


@pytest.mark.parametrize(
    "network",
    [anyns.Loopback(), anyns.HostNetwork(), anyns.Bridge(), anyns.JoinNetwork("/proc/1/ns/net"), None],
    ids=["loopback", "host", "bridge", "join", "none"],
)
def test_spec_accepts_every_network_kind(network: Any) -> None:
    """network= takes Loopback, HostNetwork, Bridge, JoinNetwork or None (the default)."""
    assert spec(network=network).network == network
    assert spec().network is None


@pytest.mark.parametrize(
    "network",
    ["bridge", anyns.Bridge, anyns.Loopback, 42, anyns.Tmpfs("/tmp"), anyns.Join(net="/proc/1/ns/net"),
     ipaddress.IPv4Network("10.0.0.0/24")],
    ids=["str", "bridge-class", "loopback-class", "int", "tmpfs", "join", "ipv4network"],
)
def test_spec_rejects_other_network_values(network: Any) -> None:
    """Anything but a network kind instance (a class, a str, a Join…) → SpecError naming network."""
    with pytest.raises(anyns.SpecError) as info:
        spec(network=network)
    assert str(info.value).startswith("network")


def test_join_network_and_join_net_together_are_rejected() -> None:
    """JoinNetwork and Join(net=...) both name a network to join → SpecError."""
    with pytest.raises(anyns.SpecError, match="JoinNetwork and Join"):
        spec(network=anyns.JoinNetwork("/proc/1/ns/net"), join=anyns.Join(net="/proc/2/ns/net"))
    # Joining other kinds next to JoinNetwork is fine.
    both = spec(network=anyns.JoinNetwork("/proc/1/ns/net"), join=anyns.Join(ipc="/proc/2/ns/ipc"))
    assert both.join is not None and both.join.ipc == "/proc/2/ns/ipc"


def test_join_network_sources() -> None:
    """JoinNetwork takes an absolute path (str or PathLike, stored as str) or a container positionally."""
    assert anyns.JoinNetwork("/proc/1/ns/net").source == "/proc/1/ns/net"
    assert anyns.JoinNetwork(pathlib.Path("/run/netns/a")).source == "/run/netns/a"
    box = FakeContainer()
    assert anyns.JoinNetwork(box).source is box


@pytest.mark.parametrize("source", ["relative/ns", "", 42, None, object(), b"/proc/1/ns/net"],
                         ids=["relative", "empty", "int", "none", "object", "bytes"])
def test_join_network_rejects_bad_sources(source: Any) -> None:
    """Not an absolute path nor a container → SpecError naming JoinNetwork.source."""
    with pytest.raises(anyns.SpecError) as info:
        anyns.JoinNetwork(source)
    assert str(info.value).startswith("JoinNetwork.source")


def test_hostname_still_needs_uts_with_a_network() -> None:
    """network= does not relax other checks: hostname without UTS stays a SpecError."""
    with pytest.raises(anyns.SpecError, match="hostname"):
        spec(network=anyns.Bridge(), hostname="h", namespaces=NS.MOUNT | NS.PID)


# --------------------------------------------------------------------------- effective_namespaces


@pytest.mark.parametrize(
    ("namespaces", "network", "expected"),
    [
        (NS.DEFAULT, None, NS.DEFAULT),
        (NS.MOUNT | NS.PID, None, NS.MOUNT | NS.PID),
        (NS.DEFAULT, anyns.HostNetwork(), NS.DEFAULT & ~NS.NET),
        (NS.MOUNT, anyns.HostNetwork(), NS.MOUNT),
        (NS.MOUNT | NS.PID, anyns.Loopback(), NS.MOUNT | NS.PID | NS.NET),
        (NS.DEFAULT, anyns.Loopback(), NS.DEFAULT),
        (NS.MOUNT, anyns.Bridge(), NS.MOUNT | NS.NET),
        (NS.DEFAULT, anyns.Bridge(netns=NETNS), NS.DEFAULT),
        (NS.DEFAULT, anyns.JoinNetwork("/proc/1/ns/net"), NS.DEFAULT & ~NS.NET),
        (NS.MOUNT | NS.UTS, anyns.JoinNetwork(FakeContainer()), NS.MOUNT | NS.UTS),
    ],
    ids=["default", "no-net", "host-drops-net", "host-without-net", "loopback-adds-net", "loopback-default",
         "bridge-adds-net", "bridge-default", "join-drops-net", "join-container"],
)
def test_network_decides_the_net_namespace(namespaces: Namespaces, network: Any, expected: Namespaces) -> None:
    """HostNetwork and JoinNetwork drop NET, Loopback and Bridge add it, None leaves namespaces as given."""
    assert effective_namespaces(spec(namespaces=namespaces, network=network)) == expected


def test_join_network_and_join_of_other_kinds_drop_both() -> None:
    """JoinNetwork next to Join(ipc=...) drops both NET and IPC from the container's own namespaces."""
    s = spec(network=anyns.JoinNetwork("/proc/1/ns/net"), join=anyns.Join(ipc="/proc/1/ns/ipc"))
    assert effective_namespaces(s) == NS.DEFAULT & ~NS.NET & ~NS.IPC


# --------------------------------------------------------------------------- plans


def test_bridge_plan_clones_the_net_namespace_and_waits_for_go() -> None:
    """With a Bridge, clone3 makes the netns and the child waits on the "go" fd after lo, before "process"."""
    plan = compile_(network=anyns.Bridge(subnet="10.3.0.0/24"))
    assert plan.clone_flags & CLONE_NEWNET == CLONE_NEWNET
    assert plan.extra_kinds == ("go",)
    ops = plan.ops
    lo = index_of(ops, "network", "interface_up")
    wait = index_of(ops, "network", "wait_go")
    assert ops[lo] == ("network", "interface_up", "lo", ("lo",))
    assert ops[wait] == ("network", "wait_go", "eth0", (plan.extra_kinds.index("go"),))
    process = [i for i, op in enumerate(ops) if op[0] == "process"]
    assert process, "no process ops"
    assert lo < wait < min(process)
    assert ops[-1][:2] == ("exec", "execve")
    # The child never unshares the network namespace it was born with.
    for _step, call, _path, args in ops:
        if call == "unshare":
            assert not int(args[0]) & CLONE_NEWNET  # type: ignore[call-overload]
    assert plan.to_wire()["extra"] == 1


def test_bridge_plan_go_fd_comes_after_joined_namespaces() -> None:
    """The "go" fd is the last extra fd, after those of joined namespaces; wait_go names its index."""
    plan = compile_(network=anyns.Bridge(), join=anyns.Join(ipc="/proc/1/ns/ipc", uts="/proc/1/ns/uts"),
                    namespaces=NS.MOUNT | NS.PID | NS.NET)
    assert plan.extra_kinds[-1] == "go"
    assert set(plan.extra_kinds[:-1]) == {"ipc", "uts"}
    wait = [op for op in plan.ops if op[1] == "wait_go"]
    assert wait == [("network", "wait_go", "eth0", (len(plan.extra_kinds) - 1,))]
    assert plan.to_wire()["extra"] == 3


@pytest.mark.parametrize("network", [None, anyns.Loopback()], ids=["default", "loopback"])
def test_loopback_plan_brings_lo_up_and_waits_for_nothing(network: Any) -> None:
    """Loopback (and the default): lo up, no "go" fd, no wait_go; the netns is made in the child."""
    plan = compile_(network=network)
    assert "go" not in plan.extra_kinds
    assert [op for op in plan.ops if op[0] == "network"] == [("network", "interface_up", "lo", ("lo",))]
    unshared = [int(args[0]) for _s, call, _p, args in plan.ops if call == "unshare"]  # type: ignore[call-overload]
    assert plan.clone_flags & CLONE_NEWNET or any(f & CLONE_NEWNET for f in unshared)


def test_loopback_without_net_flag_still_gets_its_netns() -> None:
    """Loopback with namespaces lacking NET still makes a network namespace with lo up."""
    plan = compile_(network=anyns.Loopback(), namespaces=NS.MOUNT | NS.PID)
    unshared = [int(args[0]) for _s, call, _p, args in plan.ops if call == "unshare"]  # type: ignore[call-overload]
    assert plan.clone_flags & CLONE_NEWNET or any(f & CLONE_NEWNET for f in unshared)
    assert ("network", "interface_up", "lo", ("lo",)) in plan.ops


@pytest.mark.parametrize(
    "network", [anyns.HostNetwork(), anyns.JoinNetwork("/proc/1/ns/net")], ids=["host", "join"]
)
def test_host_and_joined_networks_make_no_netns_and_touch_no_interface(network: Any) -> None:
    """HostNetwork and JoinNetwork: no CLONE_NEWNET anywhere, no lo up, no go fd."""
    plan = compile_(network=network)
    assert not plan.clone_flags & CLONE_NEWNET
    for _step, call, _path, args in plan.ops:
        if call == "unshare":
            assert not int(args[0]) & CLONE_NEWNET  # type: ignore[call-overload]
    assert [op for op in plan.ops if op[0] == "network"] == []
    assert "go" not in plan.extra_kinds


def test_join_network_plan_setns_into_net() -> None:
    """JoinNetwork(path) becomes a setns of a "net" extra fd with CLONE_NEWNET."""
    plan = compile_(network=anyns.JoinNetwork("/proc/1/ns/net"))
    assert plan.extra_kinds == ("net",)
    assert ("namespaces", "setns", "net", (0, CLONE_NEWNET)) in plan.ops
