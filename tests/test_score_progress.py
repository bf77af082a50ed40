"""``seamguard score``'s progress: each bar counts in one unit, and its total is what it will reach.

The scoring bar was drawn with a byte column ("22/361 bytes" for 22 ticks) and its total came
from an estimate one tick too many, so a finished run stopped at 360/361."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from seamguard.model.catalog import signal_catalog
from seamguard.model.inventory import Inventory, NodeRecord
from seamguard.model.topology import build_topology
from seamguard.replay_run import BYTES, TICKS, amount_text, run_score
from seamguard.telemetry.replay import read_telemetry

TICK = 30.0
HEADER = "timestamp,entity,signal,value\n"


def write_telemetry(path: Path, stamps: list[float]) -> Path:
    path.write_text(HEADER + "".join(f"{t!r},gpu/n0000/0,gpu.temp_c,60\n" for t in stamps), encoding="utf-8")
    return path


def test_amount_text_keeps_each_task_in_its_own_unit() -> None:
    assert amount_text(22, 360, TICKS) == "22/360 ticks"
    assert amount_text(1234, None, TICKS) == "1,234 ticks"
    assert amount_text(500, 900, BYTES) == "500/900 bytes"
    assert amount_text(4_200_000, 18_700_000, BYTES) == "4.2/18.7 MB"  # both scaled to the total's unit
    assert amount_text(0, 18_700_000, BYTES) == "0.0/18.7 MB"
    assert amount_text(2_500, None, BYTES) == "2.5 kB"


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        ([3.0, 10796.0], 360),  # the demo's span: (last - first) // tick + 2 said 361
        ([30.0, 60.0], 2),  # both on a boundary: each is the end of its own tick
        ([31.0, 59.0], 1),  # both in the tick ending at 60
        ([0.5, 95.0], 4),  # 30, 60 and 90 empty, 120: the empty ticks are yielded too
        ([45.0], 1),
    ],
)
def test_tick_count_is_the_number_of_ticks_the_replay_yields(
    tmp_path: Path, stamps: list[float], expected: int
) -> None:
    topo = build_topology(Inventory((NodeRecord("n0000", "r000", "cdu0", "leaf00", 8),)), ())
    path = write_telemetry(tmp_path / "t.csv", stamps)
    with read_telemetry([path], topo, signal_catalog(), tick_s=TICK) as replay:
        assert replay.tick_count is None  # nothing read yet
        yielded = sum(1 for _ in replay)
        assert replay.tick_count == yielded == expected


def test_score_progress_ends_full_in_ticks_and_bytes(tmp_path: Path) -> None:
    inv = tmp_path / "inv.csv"
    inv.write_text("node,rack,cdu,leaf,gpus\nn0000,r000,cdu0,leaf00,8\n", encoding="utf-8")
    telemetry = write_telemetry(tmp_path / "t.csv", [3.0 + 7.0 * k for k in range(40)])  # 3 .. 276
    size = telemetry.stat().st_size
    buf = io.StringIO()
    summary = run_score(
        inventory=inv, telemetry=[telemetry], out=tmp_path / "out.csv", jobs=None, config_path=None,
        journal_path=None, tick_s=TICK, console=Console(file=buf, width=120),
    )  # fmt: skip
    assert summary.ticks == 10  # ticks ending at 30, 60, ..., 300
    lines = buf.getvalue().splitlines()
    (reading,) = [line for line in lines if line.startswith("reading telemetry")]
    (scoring,) = [line for line in lines if line.startswith("scoring ticks")]
    assert f" {amount_text(size, size, BYTES)} " in reading and size > 1000  # "1.3/1.3 kB"
    assert "10/10 ticks" in scoring and "bytes" not in scoring
