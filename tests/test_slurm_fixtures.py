"""The Slurm source on what Slurm really prints, no Slurm needed: the complete state table, every
fixture in tests/fixtures/slurm (see its README: captured from our 22.05 cluster, copied from
other projects, written by hand from Slurm's source), the free-text Reason, and the reader's
choice of form (JSON first, text as fallback) driven by stand-in clients."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from seamguard.actuators.slurm import SlurmActuator
from seamguard.model.actions import Action, ActionStatus
from seamguard.model.catalog import signal_catalog
from seamguard.model.inventory import Inventory, NodeRecord
from seamguard.model.topology import build_topology
from seamguard.telemetry.sources.slurm import (
    SLURM_SIGNALS,
    SlurmReader,
    SlurmSnapshot,
    SlurmSource,
    node_batch,
    read_nodes,
    read_snapshot,
)
from seamguard.telemetry.sources.slurm_commands import SlurmConfig, run_command
from seamguard.telemetry.sources.slurm_json import (
    JsonFormError,
    load_document,
    number,
    parse_jobs_json,
    parse_nodes_json,
    parse_reservations_json,
)
from seamguard.telemetry.sources.slurm_records import SlurmJob, SlurmNode
from seamguard.telemetry.sources.slurm_states import STATE_TABLE, is_down, parse_node_state, parse_state_words
from seamguard.telemetry.sources.slurm_text import (
    parse_jobs,
    parse_kv_line,
    parse_node_line,
    parse_nodes,
    parse_reservations,
)

FIXTURES = Path(__file__).parent / "fixtures" / "slurm"


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The text fixtures' times are UTC; Slurm prints local time and the parser reads local time."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------- the state table

# Every spelling node_state_string() (long, sinfo %T) and node_state_string_compact() (short,
# sinfo %t) return in some release from 17.11 to 26.05: the string literals of both functions in
# SchedMD/slurm src/common/slurm_protocol_defs.c at tags slurm-17-11-13-1 ... slurm-26-05-3-1.
SLURM_SPELLINGS = [
    "?",
    "ALLOC",
    "ALLOC!",
    "ALLOC#",
    "ALLOC$",
    "ALLOC%",
    "ALLOC*",
    "ALLOC+",
    "ALLOC@",
    "ALLOCATED",
    "ALLOCATED!",
    "ALLOCATED#",
    "ALLOCATED$",
    "ALLOCATED%",
    "ALLOCATED*",
    "ALLOCATED+",
    "ALLOCATED@",
    "ALLOCATED^",
    "ALLOCATED~",
    "ALLOC^",
    "ALLOC~",
    "BLOCK",
    "BLOCKED",
    "BOOT",
    "BOOT*",
    "BOOT^",
    "CANCEL_REBOOT",
    "CANC_R",
    "CLOUD",
    "COMP",
    "COMP!",
    "COMP#",
    "COMP$",
    "COMP%",
    "COMP*",
    "COMP@",
    "COMPLETING",
    "COMPLETING!",
    "COMPLETING#",
    "COMPLETING$",
    "COMPLETING%",
    "COMPLETING*",
    "COMPLETING@",
    "COMPLETING^",
    "COMPLETING~",
    "COMP^",
    "COMP~",
    "DOWN",
    "DOWN!",
    "DOWN#",
    "DOWN$",
    "DOWN%",
    "DOWN*",
    "DOWN@",
    "DOWN^",
    "DOWN~",
    "DRAIN",
    "DRAIN!",
    "DRAIN#",
    "DRAIN$",
    "DRAIN%",
    "DRAIN*",
    "DRAIN@",
    "DRAINED",
    "DRAINED!",
    "DRAINED#",
    "DRAINED$",
    "DRAINED%",
    "DRAINED*",
    "DRAINED@",
    "DRAINED^",
    "DRAINED~",
    "DRAINING",
    "DRAINING!",
    "DRAINING#",
    "DRAINING$",
    "DRAINING%",
    "DRAINING*",
    "DRAINING@",
    "DRAINING^",
    "DRAINING~",
    "DRAIN^",
    "DRAIN~",
    "DRNG",
    "DRNG!",
    "DRNG#",
    "DRNG$",
    "DRNG%",
    "DRNG*",
    "DRNG@",
    "DRNG^",
    "DRNG~",
    "DYNAMIC_FUTURE",
    "DYNAMIC_NORM",
    "ERR",
    "ERR#",
    "ERR$",
    "ERR*",
    "ERR@",
    "ERROR",
    "ERROR#",
    "ERROR$",
    "ERROR*",
    "ERROR@",
    "ERROR~",
    "ERR~",
    "EXT",
    "EXTERNAL",
    "FAIL",
    "FAIL*",
    "FAILG",
    "FAILG*",
    "FAILING",
    "FAILING*",
    "FUTR",
    "FUTR!",
    "FUTR#",
    "FUTR$",
    "FUTR%",
    "FUTR*",
    "FUTR@",
    "FUTR^",
    "FUTR~",
    "FUTURE",
    "FUTURE!",
    "FUTURE#",
    "FUTURE$",
    "FUTURE%",
    "FUTURE*",
    "FUTURE@",
    "FUTURE^",
    "FUTURE~",
    "IDLE",
    "IDLE!",
    "IDLE#",
    "IDLE$",
    "IDLE%",
    "IDLE*",
    "IDLE@",
    "IDLE^",
    "IDLE~",
    "INVAL",
    "MAINT",
    "MAINT*",
    "MIX",
    "MIX!",
    "MIX#",
    "MIX$",
    "MIX%",
    "MIX*",
    "MIX-",
    "MIX@",
    "MIXED",
    "MIXED!",
    "MIXED#",
    "MIXED$",
    "MIXED%",
    "MIXED*",
    "MIXED-",
    "MIXED@",
    "MIXED^",
    "MIXED~",
    "MIX^",
    "MIX~",
    "NPC",
    "PERFCTRS",
    "PLANNED",
    "PLND",
    "POWERED_DN",
    "POWERED_DOWN",
    "POWERING_DOWN",
    "POWERING_UP",
    "POWER_DOWN",
    "POWER_UP",
    "POWRING_DN",
    "POWRNG_DN",
    "POW_DN",
    "POW_UP",
    "REBOOT",
    "REBOOT*",
    "REBOOT^",
    "REBOOT_ISSUED",
    "RESERVED",
    "RESM",
    "RESUME",
    "RESV",
    "UNDRAIN",
    "UNK",
    "UNK*",
    "UNKNOWN",
    "UNKNOWN*",
]

# What each word means, read off node_state_string(): the flags it stands for, and the base it is
# printed for (IDLE where it hides one: never DOWN); sinfo(1) "NODE STATE CODES" for the markers.
WORD = {
    "IDLE": ("IDLE", ()), "ALLOCATED": ("ALLOCATED", ()), "ALLOC": ("ALLOCATED", ()),
    "MIXED": ("MIXED", ()), "MIX": ("MIXED", ()), "DOWN": ("DOWN", ()), "FUTURE": ("FUTURE", ()),
    "FUTR": ("FUTURE", ()), "UNKNOWN": ("UNKNOWN", ()), "UNK": ("UNKNOWN", ()),
    "ERROR": ("ERROR", ()), "ERR": ("ERROR", ()),
    "COMPLETING": ("IDLE", ("COMPLETING",)), "COMP": ("IDLE", ("COMPLETING",)),
    "DRAINED": ("IDLE", ("DRAIN",)), "DRAIN": ("IDLE", ("DRAIN",)),
    "DRAINING": ("ALLOCATED", ("DRAIN",)), "DRNG": ("ALLOCATED", ("DRAIN",)),
    "FAIL": ("IDLE", ("FAIL",)), "FAILING": ("ALLOCATED", ("FAIL",)), "FAILG": ("ALLOCATED", ("FAIL",)),
    "MAINT": ("IDLE", ("MAINTENANCE",)), "REBOOT": ("IDLE", ("REBOOT_REQUESTED",)),
    "BOOT": ("IDLE", ("REBOOT_REQUESTED",)), "RESERVED": ("IDLE", ("RESERVED",)),
    "RESV": ("IDLE", ("RESERVED",)), "PLANNED": ("IDLE", ("PLANNED",)), "PLND": ("IDLE", ("PLANNED",)),
    "PERFCTRS": ("IDLE", ("PERFCTRS",)), "NPC": ("IDLE", ("PERFCTRS",)),
    "BLOCKED": ("IDLE", ("BLOCKED",)), "BLOCK": ("IDLE", ("BLOCKED",)),
    "INVAL": ("UNKNOWN", ("INVALID_REG",)), "RESUME": ("UNKNOWN", ("RESUME",)),
    "RESM": ("UNKNOWN", ("RESUME",)), "CLOUD": ("UNKNOWN", ("CLOUD",)),
    "EXTERNAL": ("UNKNOWN", ("EXTERNAL",)), "EXT": ("UNKNOWN", ("EXTERNAL",)),
    "POWERED_DOWN": ("UNKNOWN", ("POWERED_DOWN",)), "POWERED_DN": ("UNKNOWN", ("POWERED_DOWN",)),
    "POWERING_UP": ("UNKNOWN", ("POWERING_UP",)), "POWERING_DOWN": ("UNKNOWN", ("POWERING_DOWN",)),
    "POWRING_DN": ("UNKNOWN", ("POWERING_DOWN",)), "POWRNG_DN": ("UNKNOWN", ("POWERING_DOWN",)),
    "POWER_DOWN": ("UNKNOWN", ("POWER_DOWN",)), "POW_DN": ("UNKNOWN", ("POWER_DOWN",)),
    "POWER_UP": ("UNKNOWN", ("POWER_UP",)), "POW_UP": ("UNKNOWN", ("POWER_UP",)),
    "REBOOT_ISSUED": ("UNKNOWN", ("REBOOT_ISSUED",)), "CANCEL_REBOOT": ("UNKNOWN", ("REBOOT_CANCELED",)),
    "CANC_R": ("UNKNOWN", ("REBOOT_CANCELED",)), "UNDRAIN": ("UNKNOWN", ("UNDRAIN",)),
    "DYNAMIC_FUTURE": ("UNKNOWN", ("DYNAMIC_FUTURE",)), "DYNAMIC_NORM": ("UNKNOWN", ("DYNAMIC_NORM",)),
    "?": ("UNKNOWN", ("?",)),
}  # fmt: skip
MARK = {
    "*": "NOT_RESPONDING", "~": "POWERED_DOWN", "#": "POWERING_UP", "%": "POWERING_DOWN",
    "!": "POWER_DOWN", "$": "MAINTENANCE", "@": "REBOOT_REQUESTED", "^": "REBOOT_ISSUED",
    "-": "PLANNED", "+": "COMPLETING",
}  # fmt: skip
# The words for a node Slurm runs no work on: down, failed or failing, invalid registration.
DOWN_WORDS = {"DOWN", "ERROR", "ERR", "FAIL", "FAILING", "FAILG", "INVAL"}


def meaning(spelling: str) -> tuple[str, set[str], bool]:
    word, mark = (spelling, "") if spelling in WORD else (spelling[:-1], spelling[-1])
    base, flags = WORD[word]
    out = set(flags)
    if word in ("REBOOT", "BOOT") and mark == "^":  # reboot issued, no longer only requested
        out = {"REBOOT_ISSUED"}
    elif mark:
        out.add(MARK[mark])
    return base, out, word in DOWN_WORDS


def test_the_table_holds_every_spelling_slurm_prints_and_no_other() -> None:
    assert sorted(set(STATE_TABLE) - {"INVALID"}) == sorted(SLURM_SPELLINGS)


@pytest.mark.parametrize("spelling", SLURM_SPELLINGS)
def test_every_spelling_is_a_real_base_plus_flags(spelling: str) -> None:
    base, flags, down = meaning(spelling)
    for text in (spelling, spelling.lower()):  # sinfo prints lower case
        state = parse_node_state(text)
        assert (state.base, state.flags, state.unknown) == (base, frozenset(flags), ()), text
        assert is_down(state.base, state.flags) is down
        node = SlurmNode("n1", state.base, state.flags)
        assert SLURM_SIGNALS["node.slurm_down"](node) is down
        assert SLURM_SIGNALS["node.slurm_not_responding"](node) is ("NOT_RESPONDING" in flags)


@pytest.mark.parametrize(
    ("text", "base", "flags", "down"),
    [
        # the complete form (21.08+ scontrol, sinfo StateComplete) and the JSON lists
        ("IDLE", "IDLE", set(), False),
        ("IDLE+DRAIN", "IDLE", {"DRAIN"}, False),
        ("MIXED+DRAIN+MAINTENANCE+RESERVED", "MIXED", {"DRAIN", "MAINTENANCE", "RESERVED"}, False),
        ("UNKNOWN+NOT_RESPONDING", "UNKNOWN", {"NOT_RESPONDING"}, False),
        ("ALLOCATED+COMPLETING", "ALLOCATED", {"COMPLETING"}, False),
        ("IDLE+CLOUD+POWERED_DOWN", "IDLE", {"CLOUD", "POWERED_DOWN"}, False),
        ("allocated+fail", "ALLOCATED", {"FAIL"}, True),
        ("IDLE+DRAIN+INVALID_REG", "IDLE", {"DRAIN", "INVALID_REG"}, True),
        ("DOWN+REBOOT_REQUESTED+NOT_RESPONDING", "DOWN", {"REBOOT_REQUESTED", "NOT_RESPONDING"}, True),
        ("DOWN+DYNAMIC_NORM", "DOWN", {"DYNAMIC_NORM"}, True),
        ("IDLE+POWER_DRAIN+POWER_DOWN", "IDLE", {"POWER_DRAIN", "POWER_DOWN"}, False),
        # before 21.08: a sinfo word with its marker, then the stripped flags
        ("DOWN*+DRAIN", "DOWN", {"NOT_RESPONDING", "DRAIN"}, True),
        ("DOWN*+NOT_RESPONDING", "DOWN", {"NOT_RESPONDING"}, True),
        ("MAINT+DRAIN", "IDLE", {"MAINTENANCE", "DRAIN"}, False),
        ("MIXED$+DRAIN", "MIXED", {"MAINTENANCE", "DRAIN"}, False),
        ("IDLE+CLOUD+POWER", "IDLE", {"CLOUD", "POWERED_DOWN"}, False),
        ("ALLOCATED#+CLOUD", "ALLOCATED", {"POWERING_UP", "CLOUD"}, False),
        ("IDLE+FAIL", "IDLE", {"FAIL"}, True),
        ("", "UNKNOWN", set(), False),
    ],
)
def test_complete_and_pre_21_08_forms(text: str, base: str, flags: set[str], down: bool) -> None:
    state = parse_node_state(text)
    assert (state.base, state.flags, state.unknown) == (base, frozenset(flags), ())
    assert is_down(state.base, state.flags) is down


def test_a_word_no_release_prints_is_kept_and_gets_no_invented_base() -> None:
    odd = parse_node_state("frobnicated*")
    assert (odd.base, odd.flags, odd.unknown) == (
        "UNKNOWN",
        {"FROBNICATED", "NOT_RESPONDING"},
        ("FROBNICATED",),
    )
    assert not is_down(odd.base, odd.flags)
    new_flag = parse_node_state("IDLE+DRAIN+SOMETHING_NEW")
    assert (new_flag.base, new_flag.flags, new_flag.unknown) == (
        "IDLE", {"DRAIN", "SOMETHING_NEW"}, ("SOMETHING_NEW",)
    )  # fmt: skip
    # a flag name as the head word is known: no complaint
    assert parse_node_state("NOT_RESPONDING").unknown == ()
    # JSON lists: the base anywhere, "INVALID" when slurmctld's base is outside the enum
    assert parse_state_words(["DRAIN", "idle"]).base == "IDLE"
    invalid = parse_state_words(["INVALID", "NOT_RESPONDING"])
    assert (invalid.base, invalid.flags) == ("UNKNOWN", {"INVALID", "NOT_RESPONDING"})
    line = "NodeName=x1 State=FROBNICATED Reason=odd [root@2026-01-02T03:04:05]"
    nodes, problems = parse_nodes(line)
    assert nodes[0].base == "UNKNOWN" and "FROBNICATED" in nodes[0].flags
    assert problems == (
        "node x1: state 'FROBNICATED' has words no Slurm release prints (FROBNICATED): "
        "kept as flags, base read as UNKNOWN",
    )


def test_sinfos_three_spellings_of_each_real_state_agree() -> None:
    """22.05's long, short and complete spellings of the same node's state (captured)."""
    rows = [line.split() for line in fixture("sinfo_states_22.05.8.txt").splitlines() if line.strip()]
    assert len(rows) == 11
    for name, long, short, complete in rows:
        truth = parse_node_state(complete)
        for word in (long, short):
            seen = parse_node_state(word)
            assert seen.base == truth.base, (name, word)
            node, real = SlurmNode(name, seen.base, seen.flags), SlurmNode(name, truth.base, truth.flags)
            assert (node.down, node.drained, node.not_responding, node.reserved) == (
                real.down, real.drained, real.not_responding, real.reserved,
            ), (name, word)  # fmt: skip
            assert seen.flags <= truth.flags  # a word may hide a flag (maint hides RESERVED)


# ---------------------------------------------------------------- what each fixture gives the engine

# name: (base, flags, reason, reason user, reason time UTC, features, partitions), then the
# decisions: drained, down (node.slurm_down), not responding, reserved.
Row = tuple[str, set[str], str, str, str | None, tuple[str, ...], tuple[str, ...], str]
GPU = ("gpu", "h100")
EXPECT_22_05: dict[str, Row] = {
    "n001": ("ALLOCATED", set(), "", "", None, GPU, ("main",), "...."),
    "n002": ("MIXED", set(), "", "", None, GPU, ("main",), "...."),
    "n003": ("ALLOCATED", {"DRAIN"}, "hands off = really [ticket 42]", "root", "2026-12-05T11:13:30",
             GPU, ("main",), "D..."),
    "n004": ("IDLE", {"DRAIN"}, "first line = a\nsecond line", "root", "2026-12-05T11:13:30",
             GPU, ("main",), "D..."),
    "n005": ("IDLE", {"MAINTENANCE", "RESERVED"}, "", "", None, GPU, ("main",), "...R"),
    "n006": ("ALLOCATED", {"FAIL"}, "ECC errors climbing", "root", "2026-12-05T11:13:33",
             GPU, ("main",), ".X.."),
    "n007": ("IDLE", {"FAIL"}, "fan 3 = 0 rpm", "root", "2026-12-05T11:13:33", GPU, ("main",), ".X.."),
    "n008": ("DOWN", set(), "PSU swap", "root", "2026-12-05T11:13:33", GPU, ("main",), ".X.."),
    "n009": ("IDLE", {"RESERVED"}, "", "", None, GPU, ("main",), "...R"),
    "n010": ("IDLE", set(), "", "", None, GPU, ("main",), "...."),
    "n011": ("UNKNOWN", {"NOT_RESPONDING"}, "", "", None, GPU, ("spare",), "..N."),
}  # fmt: skip
A100, H100 = ("a100", "ib"), ("h100", "ib")
EXPECT_20_11: dict[str, Row] = {
    "cu201": ("IDLE", {"DRAIN"}, "Low RealMemory", "root", "2022-05-18T17:20:20", (), ("regular",), "D..."),
    "gpu02": ("DOWN", {"DRAIN", "NOT_RESPONDING"}, "Not responding", "slurm", "2022-06-29T08:00:07",
              A100, ("gpu",), "DXN."),
    "gpu03": ("MIXED", set(), "", "", None, A100, ("gpu",), "...."),
    "gpu04": ("IDLE", {"DRAIN", "MAINTENANCE"}, "firmware window", "admin", "2022-08-10T07:00:00",
              A100, ("gpu",), "D..R"),
    "gpu05": ("IDLE", {"CLOUD", "POWERED_DOWN"}, "", "", None, ("cloud", "a10"), ("cloud",), "...."),
    "gpu06": ("ALLOCATED", {"CLOUD", "POWERING_UP"}, "", "", None, ("cloud", "a10"), ("cloud",), "...."),
    "gpu07": ("IDLE", {"REBOOT_REQUESTED"}, "Reboot ASAP", "root", "2022-08-11T09:30:00",
              A100, ("gpu",), "...."),
    "gpu08": ("IDLE", {"FAIL"}, "nhc: gpu 3 = fallen off the bus", "root", "2022-08-11T09:31:00",
              A100, ("gpu",), ".X.."),
    "gpu09": ("ALLOCATED", {"COMPLETING"}, "", "", None, A100, ("gpu",), "...."),
    "gpu10": ("MIXED", {"DRAIN", "MAINTENANCE"}, "seamguard: quarantine gpu.xid_count 79", "slurm",
              "2022-08-11T10:00:00", A100, ("gpu",), "D..R"),
    "gpu11": ("IDLE", {"DRAIN"}, "Kill task failed", "", None, A100, ("gpu",), "D..."),
    "gpu12": ("IDLE", {"RESERVED"}, "", "", None, A100, ("gpu",), "...R"),
    "gpu13": ("IDLE", {"CLOUD", "POWERING_DOWN"}, "", "", None, ("cloud", "a10"), ("cloud",), "...."),
}  # fmt: skip
EXPECT_17_11: dict[str, Row] = {
    "dm2": ("DOWN", {"DRAIN", "NOT_RESPONDING"}, "Not responding", "root", "2017-06-29T08:00:07",
            (), ("copy",), "DXN."),
    "hm1": ("DOWN", {"NOT_RESPONDING"}, "Not responding", "slurm", "2017-08-18T11:14:39",
            (), ("highmem",), ".XN."),
    "lm2": ("IDLE", {"DRAIN"}, "NHC:", "root", "2017-08-07T11:01:52", ("bigmem",), ("highmem",), "D..."),
    "r1n03": ("ALLOCATED", set(), "", "", None, (), ("batch", "cpu", "test"), "...."),
    "r1n04": ("MIXED", {"DRAIN"}, "nhc: check_hw_eth eth0 = down", "root", "2017-08-18T13:57:33",
              (), ("batch", "cpu", "test"), "D..."),
    "r1n05": ("ERROR", set(), "", "", None, (), ("batch",), ".X.."),
}  # fmt: skip
EXPECT_24_11: dict[str, Row] = {
    "gpu-a01": ("MIXED", {"DRAIN"}, "seamguard: quarantine gpu/gpu-a01/3: gpu.xid_count 79", "slurm",
                "2025-03-04T10:12:00", (*H100, "sg_degraded"), ("gpu", "gpu-long"), "D..."),
    "gpu-a02": ("IDLE", {"DRAIN", "INVALID_REG"}, "gres/gpu count reported lower than configured (7 < 8)",
                "slurm", "2025-03-04T09:01:10", H100, ("gpu",), "DX.."),
    "gpu-a03": ("IDLE", {"DRAIN"}, "Kill task failed", "", None, H100, ("gpu",), "D..."),
    "gpu-a04": ("IDLE", {"DRAIN"}, "swap DIMM B2\nthen run memtest = 2 passes", "alice",
                "2025-03-04T11:00:00", H100, ("gpu",), "D..."),
    "gpu-a05": ("DOWN", {"REBOOT_REQUESTED", "NOT_RESPONDING"}, "Not responding", "slurm",
                "2025-03-04T02:00:00", H100, ("gpu",), ".XN."),
    "gpu-a06": ("IDLE", {"MAINTENANCE", "RESERVED"}, "", "", None, H100, ("gpu",), "...R"),
    "gpu-a07": ("IDLE", {"CLOUD", "POWERED_DOWN"}, "", "", None, (*H100, "cloud"), ("cloud",), "...."),
    "gpu-a08": ("IDLE", {"BLOCKED"}, "", "", None, H100, ("gpu",), "...."),
}  # fmt: skip
EXPECT_25_11: dict[str, Row] = {
    "compute-0": ("DOWN", {"DYNAMIC_NORM"}, "Not responding", "slurm", "2026-01-22T15:43:09",
                  ("compute",), ("compute",), ".X.."),
    "ext-01": ("IDLE", {"EXTERNAL"}, "", "", None, (), (), "...."),
    "gpu-b01": ("MIXED", {"FAIL"}, "NVLink errors = rising", "", None, ("gb200",), ("gpu",), ".X.."),
}  # fmt: skip
EXPECT_23_02_JSON: dict[str, Row] = {
    "gpu-c01": ("MIXED", set(), "", "", None, H100, ("gpu",), "...."),
    "gpu-c02": ("IDLE", {"DRAIN"}, "nhc: gpu 5 = fell off the bus [see INC-9]", "root",
                "2023-11-14T22:13:20", H100, ("gpu",), "D..."),
    "gpu-c03": ("ALLOCATED", {"FAIL"}, "ECC errors climbing", "root", "2023-11-14T22:15:00",
                H100, ("gpu",), ".X.."),
    "gpu-c04": ("DOWN", {"NOT_RESPONDING"}, "Not responding", "slurm", "2023-11-14T22:16:40",
                H100, ("gpu",), ".XN."),
    "gpu-c05": ("IDLE", {"MAINTENANCE", "RESERVED"}, "", "", None, H100, ("gpu",), "...R"),
    "gpu-c06": ("IDLE", {"COMPLETING"}, "", "", None, H100, ("gpu",), "...."),
    "gpu-c07": ("IDLE", {"DRAIN", "INVALID_REG"}, "Low RealMemory (reported:1500000 < 100.00% of "
                "configured:2000000)", "slurm", "2023-11-14T22:18:20", H100, ("gpu",), "DX.."),
}  # fmt: skip
EXPECT_24_11_JSON = {
    name: EXPECT_24_11[name] for name in ("gpu-a01", "gpu-a04", "gpu-a05", "gpu-a07", "gpu-a08")
} | {"gpu-a09": ("IDLE", {"POWER_DRAIN", "POWER_DOWN"}, "", "", None, H100, ("gpu",), "....")}
EXPECT_21_08_JSON: dict[str, Row] = {
    f"cs{i}.example.company.com": (base, set(), "", "", None, (), ("hw",), flags)
    for i, base, flags in (
        (2, "MIXED", "...."),
        (3, "IDLE", "...."),
        (4, "ALLOCATED", "...."),
        (5, "DOWN", ".X.."),
    )
}
EXPECT_25_11_JSON = {"compute-0": EXPECT_25_11["compute-0"]}


def check_nodes(nodes: tuple[SlurmNode, ...], expect: dict[str, Row]) -> None:
    """Every value the engine and the actuator use, and the samples node_batch emits."""
    assert [n.name for n in nodes] == list(expect)
    for node in nodes:
        base, flags, reason, user, when, features, partitions, decide = expect[node.name]
        got = (node.base, set(node.flags), node.reason, node.reason_user, iso(node.reason_time))
        assert got == (base, flags, reason, user, when), node.name
        assert (node.features, node.active_features, node.partitions) == (features, features, partitions)
        seen = "".join(c if on else "." for c, on in zip("DXNR", (
            node.drained, node.down, node.not_responding, node.reserved
        ), strict=True))  # fmt: skip
        assert seen == decide, node.name
        assert node.drained_by_seamguard == (node.drained and reason.startswith("seamguard:"))
    inventory = Inventory(tuple(NodeRecord(n.name, "r0", "c0", "l0", 8) for n in nodes))
    topo, cat = build_topology(inventory), signal_catalog()
    got = node_batch(SlurmSnapshot(0.0, nodes), topo, cat, 7.0)
    for signal, column in (("node.slurm_down", 1), ("node.slurm_not_responding", 2)):
        rows = got.batch.signal == cat[signal].index
        values = dict(zip(got.batch.entity[rows].tolist(), got.batch.value[rows].tolist(), strict=True))
        want = {topo.lookup(f"node/{n}"): float(e[7][column] != ".") for n, e in expect.items()}
        assert values == want, signal


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("scontrol_node_oneliner_17.11.txt", EXPECT_17_11),
        ("scontrol_node_oneliner_20.11.txt", EXPECT_20_11),
        ("scontrol_node_oneliner_22.05.8.txt", EXPECT_22_05),
        ("scontrol_node_oneliner_24.11.txt", EXPECT_24_11),
        ("scontrol_node_oneliner_25.11.txt", EXPECT_25_11),
    ],
)
def test_text_nodes(name: str, expect: dict[str, Row]) -> None:
    nodes, problems = parse_nodes(fixture(name))
    assert problems == ()
    check_nodes(nodes, expect)


@pytest.mark.parametrize(
    ("name", "expect", "schema", "release"),
    [
        ("sinfo_json_21.08.5_rivosinc.json", EXPECT_21_08_JSON, "openapi/v0.0.37", "21.08.5"),
        ("sinfo_json_22.05.8.json", EXPECT_22_05, "openapi/v0.0.38", "22.05.8"),
        ("scontrol_node_json_23.02.7_v0.0.39.json", EXPECT_23_02_JSON, "data_parser/v0.0.39", "23.02.7"),
        ("scontrol_node_json_24.11.5_v0.0.42.json", EXPECT_24_11_JSON, "data_parser/v0.0.42", "24.11.5"),
        ("scontrol_node_json_25.11.0_charmed_hpc.json", EXPECT_25_11_JSON, "data_parser/v0.0.44", "25.11.0"),
    ],
)
def test_json_nodes(name: str, expect: dict[str, Row], schema: str, release: str) -> None:
    nodes, problems, doc = parse_nodes_json(fixture(name))
    assert problems == () and (doc.schema, doc.release) == (schema, release)
    check_nodes(nodes, expect)


@pytest.mark.parametrize(
    ("text", "json_doc"),
    [
        ("scontrol_node_oneliner_22.05.8.txt", "sinfo_json_22.05.8.json"),  # both captured together
        ("scontrol_node_oneliner_24.11.txt", "scontrol_node_json_24.11.5_v0.0.42.json"),
        ("scontrol_node_oneliner_25.11.txt", "scontrol_node_json_25.11.0_charmed_hpc.json"),
    ],
)
def test_the_text_and_json_readers_agree_node_for_node(text: str, json_doc: str) -> None:
    by_text = {n.name: n for n in parse_nodes(fixture(text))[0]}
    by_json = {n.name: n for n in parse_nodes_json(fixture(json_doc))[0]}
    common = sorted(set(by_text) & set(by_json))
    assert len(common) >= 1
    assert [by_text[n] for n in common] == [by_json[n] for n in common]  # raw_state included


# job id, state, partition, user, nodes, start, end (UTC), name
Job = tuple[str, str, str, str, tuple[str, ...], str | None, str | None, str]
JOBS_22_05: list[Job] = [
    ("1", "RUNNING", "main", "root", ("n001", "n002"), "2026-12-05T11:13:27", "2026-12-05T12:43:27",
     "train two"),
    ("2", "RUNNING", "main", "root", ("n003",), "2026-12-05T11:13:30", None, "whole"),
    ("3", "RUNNING", "main", "root", ("n006",), "2026-12-05T11:13:33", None, "failing"),
    ("4_[1-4%2]", "PENDING", "main", "root", (), None, None, "held array"),
    ("5_7", "RUNNING", "main", "root", ("n001",), "2026-12-05T11:13:36", None, "array run"),
]  # fmt: skip
JOBS_23_11: list[Job] = [
    ("101", "RUNNING", "gpu", "alice", ("gpu-c01", "gpu-c02"), "2023-11-14T22:13:20",
     "2023-11-15T22:13:20", "llm train | stage=2"),
    ("102", "RUNNING", "infer", "bob", ("gpu-c03",), "2023-11-14T22:21:40", None, "serve"),
    ("103_[1-16%4]", "PENDING", "gpu", "alice", (), None, None, "sweep"),
    ("103_2", "RUNNING", "gpu", "alice", ("gpu-c05",), "2023-11-14T22:30:00", "2023-11-14T23:30:00", "sweep"),
    ("120+0", "RUNNING", "gpu", "alice", ("gpu-c06",), "2023-11-14T22:46:40", "2023-11-15T00:46:40", "het"),
    ("120+1", "RUNNING", "gpu", "alice", ("gpu-c07",), "2023-11-14T22:46:40", "2023-11-15T00:46:40", "het"),
    ("130", "COMPLETING", "gpu", "alice", ("gpu-c08",), "2023-11-14T23:03:20", "2023-11-15T00:03:20", "eval"),
]  # fmt: skip
JOBS_21_08: list[Job] = [
    ("26515966", "RUNNING", "hw-l", "bkd", ("cs75",), "2023-05-15T01:42:01", "2023-06-13T05:23:53", "job_name"),
    ("58948420_[1-10]", "PENDING", "hw-m", "bkd", (), None, None, "some job name"),
]  # fmt: skip


def job_rows(jobs: Iterable[SlurmJob]) -> list[Job]:
    return sorted(
        (j.job_id, j.state, j.partition, j.user, j.nodes, iso(j.start), iso(j.end), j.name) for j in jobs
    )


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("squeue_json_21.08.5_rivosinc.json", JOBS_21_08),
        ("squeue_json_22.05.8.json", JOBS_22_05),
        ("squeue_json_23.11.4_v0.0.40.json", JOBS_23_11),
    ],
)
def test_json_jobs(name: str, expect: list[Job]) -> None:
    jobs, problems, _ = parse_jobs_json(fixture(name))
    assert problems == ()
    assert job_rows(jobs) == sorted(expect)


def test_text_jobs_agree_with_json_jobs_captured_together() -> None:
    jobs, problems = parse_jobs(fixture("squeue_text_22.05.8.txt"))
    assert problems == ()
    assert job_rows(jobs) == sorted(JOBS_22_05)
    assert sorted(jobs, key=lambda j: j.job_id) == sorted(
        parse_jobs_json(fixture("squeue_json_22.05.8.json"))[0], key=lambda j: j.job_id
    )


def test_reservations_text_and_json() -> None:
    resv, problems = parse_reservations(fixture("scontrol_reservation_oneliner_22.05.8.txt"))
    assert problems == ()
    assert [(r.name, r.nodes, r.maintenance, r.active, iso(r.start), iso(r.end)) for r in resv] == [
        ("sg_maint", ("n005",), True, True, "2026-12-05T11:13:30", "2026-12-05T21:13:30"),
        ("sg_resv", ("n009",), False, True, "2026-12-05T11:13:30", "2026-12-05T21:13:30"),
    ]
    text = fixture("scontrol_reservation_json_24.11.5_v0.0.42.json")
    during, problems, doc = parse_reservations_json(text, now=1741090000.0)
    assert problems == () and doc.schema == "data_parser/v0.0.42"
    assert [(r.name, r.nodes, r.maintenance, r.active, iso(r.start), iso(r.end)) for r in during] == [
        ("fw_upgrade", ("gpu-a06", "gpu-a07"), True, True, "2025-03-04T09:20:00", "2025-03-05T09:20:00"),
        ("train_block", ("gpu-a01", "gpu-a02", "gpu-a03", "gpu-a04"), False, False,
         "2025-03-05T18:40:00", "2025-03-06T18:40:00"),
    ]  # fmt: skip
    after, _, _ = parse_reservations_json(text, now=1741170000.0)
    assert [r.active for r in after] == [False, False]


def test_json_schemas_by_value_and_bad_documents() -> None:
    assert number(7) == (7.0, False) and number(None) == (None, False)
    assert number({"set": True, "infinite": False, "number": 5}) == (5.0, False)
    assert number({"set": False, "infinite": True, "number": 0}) == (None, True)
    assert number({"set": False, "infinite": False, "number": 0}) == (None, False)
    assert number("Infinity") == (None, True)
    with pytest.raises(ValueError, match="a number"):
        number(True)
    with pytest.raises(JsonFormError, match="not JSON"):
        load_document("NodeName=n1 State=IDLE", "nodes")
    with pytest.raises(JsonFormError, match="no 'jobs' list in the JSON \\(keys: errors, meta, nodes\\)"):
        load_document(fixture("sinfo_json_22.05.8.json"), "jobs")
    doc = {
        "nodes": [{"state": ["IDLE"]}, {"name": "n2", "state": 3}, {"name": "n3", "state": ["idle"]}, 7],
        "errors": [{"error": "Unable to contact slurm controller", "error_number": 1}],
        "warnings": [{"description": "deprecated field"}],
    }
    nodes, problems, _ = parse_nodes_json(json.dumps(doc))
    assert [n.name for n in nodes] == ["n3"]
    assert problems == (
        "Slurm error: Unable to contact slurm controller",
        "Slurm warning: deprecated field",
        "1 nodes entries are not JSON objects",
        "node #0: no name",
        "node n2: state 3 is not a word or a list",
    )
    jobs, problems, _ = parse_jobs_json(json.dumps({"jobs": [
        {"job_id": 5, "job_state": "RUNNING", "nodes": "n[1-", "node_count": 2},
        {"job_id": 6, "job_state": "RUNNING", "nodes": "n[1-2]", "node_count": 3},
        {"job_state": "RUNNING"},
    ]}))  # fmt: skip
    assert jobs == ()
    assert problems[0].startswith("job 5: bad hostlist 'n[1-'")
    assert problems[1:] == ("job 6: node list 'n[1-2]' has 2 nodes, squeue says 3", "job #2: no job_id")
    # values of an unexpected shape: that record is reported, the others kept
    nodes, problems, _ = parse_nodes_json(json.dumps({"nodes": [
        {"name": "n1", "state": ["IDLE"], "features": {"gpu": 1}},
        {"name": "n2", "state": ["IDLE"], "reason": "r", "reason_changed_at": "soon"},
        {"name": "n3", "state": ["IDLE"], "features": "gpu,h100", "partitions": "a,b"},
    ]}))  # fmt: skip
    assert [(n.name, n.features, n.partitions) for n in nodes] == [("n3", ("gpu", "h100"), ("a", "b"))]
    assert problems == ("node n1: a name list, not {'gpu': 1}", "node n2: a number, not 'soon'")
    resv, problems, _ = parse_reservations_json(
        json.dumps({"reservations": [{"name": "r1", "flags": 5}, {"flags": []}]}), now=0.0
    )
    assert resv == () and problems == ("reservation r1: flags 5 are not a list", "reservation #1: no name")


# ---------------------------------------------------------------- the free-text Reason


def test_a_reason_without_a_stamp_ends_at_the_next_field_slurm_prints() -> None:
    # 20.11 prints Comment=(null) after every reason; 21.08+ Comment= and Extra= when set.
    fields, reason = parse_kv_line("NodeName=a State=IDLE+DRAIN Reason=Kill task failed Comment=(null)")
    assert reason is not None and (reason.text, reason.user, reason.time) == ("Kill task failed", "", None)
    assert fields["Comment"] == "(null)"
    fields, reason = parse_kv_line(
        "NodeName=b State=IDLE+DRAIN Reason=fan = 0 rpm Comment=ticket 1234 = open Extra=owner=ops"
    )
    assert reason is not None and reason.text == "fan = 0 rpm"
    assert (fields["Comment"], fields["Extra"]) == ("ticket 1234 = open", "owner=ops")
    # the later fields of 23.02+ and 25.05+
    fields, reason = parse_kv_line(
        "NodeName=c State=MIXED+FAIL Reason=NVLink = bad InstanceId=i-1 InstanceType=p5 "
        "ReservationName=r1 TLSCertTokenSet=No TLSCertLastRenewal=2026-01-01T00:00:00 Topology=b:1 "
        "Parameters=x=1"
    )
    assert reason is not None and reason.text == "NVLink = bad"
    assert fields["InstanceType"] == "p5" and fields["Topology"] == "b:1" and fields["Parameters"] == "x=1"
    # free text naming an earlier field, or a later one that is really printed, stays whole
    fields, reason = parse_kv_line("NodeName=d State=IDLE Reason=r Comment=see Extra=x Extra=real")
    assert (fields["Comment"], fields["Extra"]) == ("see Extra=x", "real")
    fields, _ = parse_kv_line("NodeName=e State=IDLE Comment=says State=DOWN here")
    assert fields["State"] == "IDLE" and fields["Comment"] == "says State=DOWN here"


def test_a_stamped_reason_keeps_spaces_equals_brackets_and_field_names() -> None:
    line = (
        "NodeName=n009 State=IDLE+DRAIN AvailableFeatures=(null) ActiveFeatures= "
        "Reason=seamguard: quarantine gpu.temp_c=91 [max] peers=4 Comment=x [alice@2026-01-02T03:04:05] "
        "Comment=after it"
    )
    node = parse_node_line(line)
    assert node is not None
    assert node.reason == "seamguard: quarantine gpu.temp_c=91 [max] peers=4 Comment=x"
    assert (node.reason_user, iso(node.reason_time)) == ("alice", "2026-01-02T03:04:05")
    assert node.features == () and node.active_features == () and node.drained_by_seamguard
    fields, _ = parse_kv_line(line)
    assert fields["Comment"] == "after it" and "peers" not in fields and "gpu.temp_c" not in fields
    # last on the line (Slurm ends a oneliner record with a space)
    _, reason = parse_kv_line("NodeName=f State=DOWN Reason=a = b [root@2026-01-02T03:04:05] ")
    assert reason is not None and (reason.text, reason.user) == ("a = b", "root")
    # several lines: the stamp follows the first, the others come after 8 spaces
    _, reason = parse_kv_line(
        "NodeName=g State=IDLE+DRAIN Reason=one [root@2026-01-02T03:04:05]        two = 2        three "
        "Comment=c"
    )
    assert reason is not None and reason.text == "one\ntwo = 2\nthree"
    # a field of a newer release after the stamp is a field, not reason text
    fields, reason = parse_kv_line("NodeName=h State=IDLE Reason=r [root@2026-01-02T03:04:05] Future=v w")
    assert reason is not None and reason.text == "r" and fields["Future"] == "v w"
    # no stamp and nothing after it: the reason runs to the end
    node = parse_node_line("NodeName=n1 State=DOWN* Reason=Not responding = yes")
    assert node is not None and (node.reason, node.reason_user, node.reason_time) == (
        "Not responding = yes",
        "",
        None,
    )
    assert node.down and node.not_responding and not node.drained


# ---------------------------------------------------------------- the reader's choice of form

STAND_IN = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$(basename "$0") $*" in
{cases}
esac
echo "$(basename "$0"): unexpected $*" >&2; exit 2
"""


def stand_in(tmp_path: Path, cases: dict[str, dict[str, str]]) -> tuple[SlurmConfig, Path]:
    """Fake scontrol/sinfo/squeue: for each client, ``argument pattern -> shell body``."""
    log = tmp_path / "calls.log"
    for client in ("scontrol", "sinfo", "squeue"):
        body = "\n".join(
            f'"{client} {pattern}") {action} ;;' for pattern, action in cases.get(client, {}).items()
        )
        path = tmp_path / client
        path.write_text(STAND_IN.format(log=log, cases=body))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    config = SlurmConfig(
        scontrol=str(tmp_path / "scontrol"), sinfo=str(tmp_path / "sinfo"), squeue=str(tmp_path / "squeue"),
        timeout_s=2.0,
    )  # fmt: skip
    return config, log


def calls(log: Path) -> list[str]:
    out = log.read_text().splitlines() if log.exists() else []
    log.write_text("")
    return out


def cat(name: str) -> str:
    return f"cat '{FIXTURES / name}'; exit 0"


NO_JSON = "echo \"$0: unrecognized option '--json'\" >&2; exit 1"
SLURM_22_05 = {
    "scontrol": {
        "show node --json": NO_JSON,
        "show node n004 --json": NO_JSON,
        "show reservation --json": NO_JSON,
        "show node --oneliner": cat("scontrol_node_oneliner_22.05.8.txt"),
        "show reservation --oneliner": cat("scontrol_reservation_oneliner_22.05.8.txt"),
        "show node n004 --oneliner": f"grep '^NodeName=n004 ' '{FIXTURES / 'scontrol_node_oneliner_22.05.8.txt'}'; exit",
    },
    "sinfo": {"--json": cat("sinfo_json_22.05.8.json")},
    "squeue": {"--json --all": cat("squeue_json_22.05.8.json")},
}  # fmt: skip


def test_on_22_05_the_json_forms_that_exist_are_used_without_a_word(tmp_path: Path) -> None:
    config, log = stand_in(tmp_path, SLURM_22_05)
    clock = [0.0]
    reader = SlurmReader(config, clock=lambda: clock[0])
    snap, notices = read_snapshot(config, 5.0, reader)
    assert notices == ()
    assert dict(snap.forms) == {
        "nodes": "sinfo --json (openapi/v0.0.38, Slurm 22.05.8)",
        "jobs": "squeue --json (openapi/v0.0.38, Slurm 22.05.8)",
        "reservations": "text",
    }
    check_nodes(snap.nodes, EXPECT_22_05)
    assert job_rows(snap.jobs) == sorted(JOBS_22_05) and len(snap.reservations) == 2
    assert calls(log) == [
        "scontrol show node --json", "sinfo --json",
        "scontrol show reservation --json", "scontrol show reservation --oneliner",
        "squeue --json --all",
    ]  # fmt: skip
    # settled: the next polls go straight to the forms that work
    again, notices = read_snapshot(config, 6.0, reader)
    assert notices == () and again.nodes == snap.nodes and again.jobs == snap.jobs
    assert calls(log) == ["sinfo --json", "scontrol show reservation --oneliner", "squeue --json --all"]
    # ... until json_retry_s has passed: scontrol --json is asked again, silently refused again
    clock[0] = config.json_retry_s + 1.0
    _, notices = read_snapshot(config, 7.0, reader)
    assert notices == () and calls(log)[0] == "scontrol show node --json"
    # the actuator's read of one node never runs sinfo (it prints every node)
    one = reader.nodes(("n004",))
    assert one.records is not None and [n.name for n in one.records] == ["n004"] and one.notices == ()
    assert calls(log) == ["scontrol show node n004 --json", "scontrol show node n004 --oneliner"]


def test_json_that_fails_otherwise_is_said_once_and_text_is_read(tmp_path: Path) -> None:
    config, _ = stand_in(tmp_path, {
        "scontrol": {"show node --json": "echo '{\"meta\": {}}'; exit 0",  # no nodes list
                     "show node --oneliner": cat("scontrol_node_oneliner_24.11.txt"),
                     "show reservation --json": cat("scontrol_reservation_json_24.11.5_v0.0.42.json")},
        "sinfo": {"--json": "echo 'sinfo: error: plugin serializer/json not found' >&2; exit 1"},
        "squeue": {"--json --all": "echo '[garbage'; exit 0",
                   "--noheader --all --format %i|%T|%P|%u|%D|%S|%e|%N|%j": "exit 0"},
    })  # fmt: skip
    reader = SlurmReader(config)
    snap, notices = read_snapshot(config, 5.0, reader)
    assert dict(snap.forms) == {
        "nodes": "text", "jobs": "text", "reservations": "scontrol --json (data_parser/v0.0.42, Slurm 24.11.5)",
    }  # fmt: skip
    check_nodes(snap.nodes, EXPECT_24_11)
    assert [(n.where.rsplit("/", 1)[-1], n.message.split(";")[0]) for n in notices] == [
        ("scontrol show node --json", "no 'nodes' list in the JSON (keys: meta)"),
        ("sinfo --json", "exited 1: sinfo: error: plugin serializer/json not found"),
        ("squeue --json --all", "not JSON (Expecting value at character 1): '[garbage\\n'"),
    ]
    assert all("instead (tried again after 3600s)" in n.message for n in notices)
    _, notices = read_snapshot(config, 6.0, reader)
    assert notices == ()


def test_a_timeout_is_not_a_reason_to_fall_back_and_collect_never_raises(tmp_path: Path) -> None:
    config, log = stand_in(tmp_path, {
        "scontrol": {"show node --json": "sleep 5", "show reservation --json": "exit 0"},
        "sinfo": {"--json": "exit 0"},
        "squeue": {"--json --all": "yes x | head -c 300000; exit 0"},
    })  # fmt: skip
    config = config.model_copy(update={"timeout_s": 0.5, "max_output_bytes": 65536})
    inventory = Inventory((NodeRecord("n1", "r0", "c0", "l0", 8),))
    source = SlurmSource(build_topology(inventory), config)
    got = source.collect(now=1.0)
    assert len(got.batch) == 0 and source.placements() is None
    messages = {n.where.rsplit("/", 1)[-1]: n.message for n in got.notices}
    assert messages["scontrol show node --json"] == "timed out after 0.5s"
    assert "sinfo --json" not in "".join(calls(log))  # not tried after the timeout
    assert (
        messages["squeue --json --all"] == "printed more than max_output_bytes=65536; stopped, output dropped"
    )
    assert messages["scontrol show reservation --json"].startswith("not JSON")


def test_read_format_text_or_json_only(tmp_path: Path) -> None:
    config, log = stand_in(tmp_path, SLURM_22_05)
    text_only = config.model_copy(update={"read_format": "text"})
    _, notices = read_snapshot(text_only, 1.0, SlurmReader(text_only))
    assert all("--json" not in c for c in calls(log))
    assert [n.where.rsplit("/", 1)[-1] for n in notices] == [
        "squeue --noheader --all --format %i|%T|%P|%u|%D|%S|%e|%N|%j"  # not in the stand-in
    ]
    json_only = config.model_copy(update={"read_format": "json"})
    snap, notices = read_snapshot(json_only, 1.0, SlurmReader(json_only))
    assert all("--oneliner" not in c for c in calls(log))
    assert snap.read == {"nodes", "jobs"}  # no reservation JSON before 23.02, and no fallback
    assert [n.message.splitlines()[0] for n in notices] == [
        f"exited 1: {config.scontrol}: unrecognized option '--json'"
    ]


def test_commands_get_iso_times_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_TIME_FORMAT", "relative")
    res = run_command(SlurmConfig(), ["sh", "-c", "echo $SLURM_TIME_FORMAT; echo err >&2"])
    assert (res.ok, res.stdout, res.stderr) == (True, "standard\n", "err")
    assert os.environ["SLURM_TIME_FORMAT"] == "relative"


def test_an_unknown_node_named_to_scontrol_json_is_not_found(tmp_path: Path) -> None:
    """23.02+'s scontrol --json lists nothing for an unknown name (exit 0), where the text form
    says "Node x not found" (exit 1): the reader says it either way, and the actuator fails."""
    empty = json.dumps({"nodes": [], "meta": {"plugin": {"data_parser": "data_parser/v0.0.42"}}})
    config, _ = stand_in(tmp_path, {"scontrol": {"show node gone --json": f"echo '{empty}'; exit 0"}})
    nodes, notices = read_nodes(config, ("gone",))
    assert nodes == () and [n.message for n in notices] == ["Node gone not found"]
    res = SlurmActuator(config).apply(Action("drain_node", "node/gone", "why", "quarantine", 0.0), 1.0)
    assert res.status is ActionStatus.FAILED and "Node gone not found" in res.detail
