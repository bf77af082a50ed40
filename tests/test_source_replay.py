"""The replay as a Source: the same batches as iterating the replay, handed over as time passes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from seamguard.model.catalog import signal_catalog
from seamguard.model.topology import Topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.replay import read_telemetry
from seamguard.telemetry.sources.replay_source import ReplaySource
from seamguard.telemetry.writer import TelemetryCsvWriter
from seamguard.twin.labelled import SyntheticFleet

CAT = signal_catalog()
TICK = 30.0
T0 = 1_700_000_010.0
TICKS = 12


@pytest.fixture
def recording(tmp_path: Path, topology: Topology) -> Path:
    fleet = SyntheticFleet(topology, (), seed=5, start=T0, tick_s=TICK)
    path = tmp_path / "fleet.csv.gz"
    with TelemetryCsvWriter(path, topology, CAT) as w:
        for k in range(1, TICKS + 1):
            w.write(fleet.batch(T0 + k * TICK))
    return path


def direct(paths: list[Path], topo: Topology) -> list[tuple[float, TelemetryBatch]]:
    with read_telemetry(paths, topo, CAT, tick_s=TICK) as replay:
        return list(replay)


def same(a: TelemetryBatch, b: TelemetryBatch) -> bool:
    return (
        np.array_equal(a.entity, b.entity)
        and np.array_equal(a.signal, b.signal)
        and np.array_equal(a.timestamp, b.timestamp)
        and np.array_equal(a.value, b.value, equal_nan=True)
    )


def test_collect_at_each_tick_gives_the_replays_batches(recording: Path, topology: Topology) -> None:
    want = direct([recording], topology)
    assert len(want) >= TICKS and sum(len(b) for _, b in want) > 0
    with ReplaySource.from_paths([recording], topology, CAT, tick_s=TICK) as src:
        assert src.name == "replay"
        assert src.next_tick == want[0][0]
        assert len(src.collect(want[0][0] - 1.0).batch) == 0  # before the first tick ends: nothing
        for t, batch in want:
            assert src.next_tick == t
            got = src.collect(t)
            assert same(got.batch, batch)
            assert len(src.collect(t).batch) == 0  # nothing twice
        assert src.exhausted and src.next_tick is None
        assert len(src.collect(math.inf).batch) == 0


def test_a_coarser_clock_gets_every_tick_up_to_now_in_order(recording: Path, topology: Topology) -> None:
    want = direct([recording], topology)
    with ReplaySource.from_paths([recording], topology, CAT, tick_s=TICK) as src:
        got = [src.collect(want[i][0] + 5.0).batch for i in range(2, len(want), 3)]
        got.append(src.collect(math.inf).batch)
    assert same(TelemetryBatch.concat(got), TelemetryBatch.concat([b for _, b in want]))


def test_the_replays_report_comes_out_once_as_notices_and_unknown(
    recording: Path, topology: Topology, tmp_path: Path
) -> None:
    extra = tmp_path / "extra.csv"
    extra.write_text(
        "timestamp,entity,signal,value\n"
        f"{T0 + 40},rack/r0,rack.inlet_temp_c,31.5\n"
        f"{T0 + 41},rack/r404,rack.inlet_temp_c,30.0\n"
        f"{T0 + 42},rack/r404,rack.inlet_temp_c,30.1\n"
        f"{T0 + 43},cdu/c0,cdu.flux,1\n"
        f"soon,rack/r0,rack.inlet_temp_c,30\n"
        + "".join(f"{T0 + 50 + i},rack/r1,rack.inlet_temp_c,{30 + i}\n" for i in range(10)),
        encoding="utf-8",
    )
    with ReplaySource.from_paths([recording, extra], topology, CAT, tick_s=TICK) as src:
        first = src.collect(T0)
        assert first.unknown == {"rack/r404": 2, "cdu.flux": 1}
        text = [str(n) for n in first.notices]
        assert any("malformed" in t and "extra.csv:6" in t and "'soon' is not a number" in t for t in text)
        assert any("unknown entity 'rack/r404'" in t for t in text)
        later = src.collect(math.inf)
        assert later.notices == () and later.unknown == {}
        assert src.exhausted


def test_a_refused_recording_is_a_notice_not_an_exception(topology: Topology, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,entity,signal,value\n" + "x,y,z,w\n" * 20, encoding="utf-8")
    with ReplaySource.from_paths([bad], topology, CAT, tick_s=TICK) as src:
        got = src.collect(T0)
        assert len(got.batch) == 0
        (n,) = got.notices
        assert n.source == "replay" and str(bad) in n.where
        assert "recording refused" in n.message and "malformed" in n.message
        assert src.exhausted
        assert src.collect(math.inf).notices == ()


def test_a_replay_that_fails_mid_read_is_a_notice_not_an_exception(
    recording: Path, topology: Topology
) -> None:
    """A spilled run that cannot be read back (disk gone, file removed) stops the recording with a
    notice; what was read before still arrived."""
    want = direct([recording], topology)

    real = read_telemetry([recording], topology, CAT, tick_s=TICK)

    class Failing:
        report = real.report

        def __iter__(self) -> Iterator[tuple[float, TelemetryBatch]]:
            yield want[0]
            raise OSError("spill file vanished")

        def close(self) -> None:
            real.close()

    src = ReplaySource(Failing(), where="recording.csv")  # type: ignore[arg-type]
    first = src.collect(want[0][0])
    assert same(first.batch, want[0][1])
    after = src.collect(math.inf)
    said = [n.message for n in (*first.notices, *after.notices) if "recording" in n.message]
    assert len(after.batch) == 0 and said == ["recording stopped: spill file vanished"]
    assert src.exhausted
