"""Replaying recorded telemetry: tick alignment, ordering, the external sort, and bad input."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seamguard.errors import InputError
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, JobRecord, NodeRecord
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology, build_topology
from seamguard.telemetry import replay as replay_mod
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.replay import ReplayReport, read_telemetry
from seamguard.telemetry.writer import TelemetryCsvWriter

CAT = signal_catalog()
TICK = 30.0
T0 = 1_700_000_010.0  # a multiple of 30
HEADER = "timestamp,entity,signal,value\n"
Row = tuple[float, str, str, float, float]  # tick time, entity, signal, timestamp, value


@pytest.fixture(scope="module")
def topo() -> Topology:
    nodes = tuple(
        NodeRecord(
            node=f"n{i:04d}", rack=f"r{i // 2:03d}", cdu="cdu0", leaf="leaf00", gpus=8, storage="ckpt0"
        )
        for i in range(4)
    )
    job = JobRecord("train-a", JobClass.SYNC_TRAINING, ("n0000", "n0001"), 0.0, 1e10)
    return build_topology(Inventory(nodes), (job,))


def replay_rows(
    paths: list[Path], topo: Topology, progress: Callable[[int, int], None] | None = None
) -> tuple[list[Row], list[float], ReplayReport]:
    rows: list[Row] = []
    ticks: list[float] = []
    with read_telemetry(paths, topo, CAT, tick_s=TICK, progress=progress) as replay:
        for now, batch in replay:
            ticks.append(now)
            assert np.all(np.diff(batch.timestamp) >= 0), "a tick's samples are in time order"
            for e, s, t, v in zip(batch.entity, batch.signal, batch.timestamp, batch.value, strict=True):
                rows.append((now, topo.ids[e], CAT.signals[s].name, float(t), float(v)))
        report = replay.report
    return rows, ticks, report


def sample_batch(topo: Topology, n: int = 400, seed: int = 0) -> TelemetryBatch:
    rng = np.random.default_rng(seed)
    gpu_sigs = [CAT[name].index for name in ("gpu.temp_c", "gpu.power_w", "gpu.sm_clock_mhz")]
    ts = T0 + rng.uniform(0, 600, n)
    ts[:3] = [T0, T0 + 30.0, T0 + 0.1]  # two exactly on a tick boundary
    values = rng.normal(60, 15, n)
    values[5] = np.nan  # missing data
    values[6] = 1e-300
    return TelemetryBatch(
        rng.choice(topo.members[EntityKind.GPU], n),
        rng.choice(np.array(gpu_sigs, dtype=np.int64), n),
        ts,
        values,
    )


def expected_rows(topo: Topology, batch: TelemetryBatch) -> list[Row]:
    return [
        (math.ceil(t / TICK) * TICK, topo.ids[e], CAT.signals[s].name, float(t), float(v))
        for e, s, t, v in zip(batch.entity, batch.signal, batch.timestamp, batch.value, strict=True)
    ]


def canon(rows: list[Row]) -> list[tuple[float, str, str, float, str]]:
    """Sortable and NaN-comparable: values by their exact repr."""
    return sorted((a, b, c, d, repr(v)) for a, b, c, d, v in rows)


def write_csv(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["tel.csv", "tel.csv.gz"])
def test_writer_reader_round_trip_is_exact(tmp_path: Path, topo: Topology, name: str) -> None:
    batch = sample_batch(topo)
    path = tmp_path / name
    with TelemetryCsvWriter(path, topo, CAT) as writer:
        half = len(batch) // 2
        for sl in (slice(0, half), slice(half, None)):
            writer.write(
                TelemetryBatch(batch.entity[sl], batch.signal[sl], batch.timestamp[sl], batch.value[sl])
            )
    if name == "tel.csv":
        assert path.read_text().startswith(HEADER)
    rows, ticks, report = replay_rows([path], topo)
    assert canon(rows) == canon(expected_rows(topo, batch))  # bit-exact timestamps and values
    assert report.rows == report.rows_used == len(batch)
    assert report.malformed == 0 and report.missing_values == 1
    assert ticks == [T0 + TICK * k for k in range(len(ticks))]  # every tick, ascending
    by_ts = {r[3]: r[0] for r in rows}
    assert by_ts[T0] == T0 and by_ts[T0 + 30.0] == T0 + 30.0 and by_ts[T0 + 0.1] == T0 + 30.0


def test_parquet_input(tmp_path: Path, topo: Topology) -> None:
    batch = sample_batch(topo, seed=1)
    table = pa.table(
        {
            "timestamp": batch.timestamp,
            "entity": [topo.ids[e] for e in batch.entity],
            "signal": pa.array([CAT.signals[s].name for s in batch.signal]).dictionary_encode(),
            "value": batch.value,
            "extra": np.arange(len(batch)),  # extra columns are ignored
        }
    )
    pq.write_table(table, tmp_path / "tel.parquet", row_group_size=50)
    rows, _, report = replay_rows([tmp_path / "tel.parquet"], topo)
    assert canon(rows) == canon(expected_rows(topo, batch))
    assert report.files == 1 and report.rows_used == len(batch)


def test_tick_boundaries(tmp_path: Path, topo: Topology) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        [
            "31,gpu/n0000/0,gpu.temp_c,2",
            "30,gpu/n0000/0,gpu.temp_c,1",
            "60,node/n0001,node.heartbeat_age_s,3",
        ],
    )
    rows, ticks, _ = replay_rows([path], topo)
    assert ticks == [30.0, 60.0]
    assert [(r[0], r[3]) for r in rows] == [(30.0, 30.0), (60.0, 31.0), (60.0, 60.0)]


def test_unordered_files_come_out_in_tick_order(tmp_path: Path, topo: Topology) -> None:
    late = write_csv(tmp_path / "a.csv", ["125,gpu/n0000/1,gpu.temp_c,5", "95,rack/r000,rack.power_kw,4"])
    early = write_csv(
        tmp_path / "b.csv",
        ["61,cdu/cdu0,cdu.flow_lpm,3", "1,gpu/n0003/7,gpu.temp_c,1", "89,link/n0001,link.errors_total,9"],
    )
    rows, ticks, _ = replay_rows([late, early], topo)
    assert ticks == [30.0, 60.0, 90.0, 120.0, 150.0]
    assert [r[3] for r in rows] == [1.0, 61.0, 89.0, 95.0, 125.0]
    assert [r[0] for r in rows] == [30.0, 90.0, 90.0, 120.0, 150.0]


def test_empty_ticks_in_a_gap_are_yielded(tmp_path: Path, topo: Topology) -> None:
    path = write_csv(tmp_path / "t.csv", ["30,gpu/n0000/0,gpu.temp_c,1", "150,gpu/n0000/0,gpu.temp_c,2"])
    seen: list[tuple[float, int]] = []
    with read_telemetry([path], topo, CAT, tick_s=TICK) as replay:
        seen = [(now, len(batch)) for now, batch in replay]
    assert seen == [(30.0, 1), (60.0, 0), (90.0, 0), (120.0, 0), (150.0, 1)]


def test_a_stray_millisecond_timestamp_is_refused_not_replayed(tmp_path: Path, topo: Topology) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        ["1700000000,gpu/n0000/0,gpu.temp_c,60", "1700000000123,gpu/n0000/0,gpu.temp_c,61"],
    )
    with (
        read_telemetry([path], topo, CAT, tick_s=TICK) as replay,
        pytest.raises(InputError, match="milliseconds"),
    ):
        next(iter(replay))


def test_external_sort_matches_in_memory_and_cleans_up(tmp_path: Path, topo: Topology) -> None:
    batch = sample_batch(topo, n=300, seed=2)
    batch.timestamp[10:20] = T0 + 45.0  # ties: input order must survive both paths
    paths = [tmp_path / "a.csv", tmp_path / "b.csv.gz"]
    for path, sl in zip(paths, (slice(0, 170), slice(170, None)), strict=True):
        with TelemetryCsvWriter(path, topo, CAT) as writer:
            writer.write(
                TelemetryBatch(batch.entity[sl], batch.signal[sl], batch.timestamp[sl], batch.value[sl])
            )

    def run(chunk_rows: int) -> tuple[list[tuple[float, TelemetryBatch]], ReplayReport, Path | None]:
        with read_telemetry(paths, topo, CAT, tick_s=TICK, chunk_rows=chunk_rows) as replay:
            out = list(replay)
            spill = replay.spill_dir
            if chunk_rows < len(batch):
                assert spill is not None and any(spill.glob("*.npy"))
        return out, replay.report, spill

    memory, mem_report, mem_spill = run(1_000_000)
    external, ext_report, ext_spill = run(7)
    assert mem_spill is None and mem_report.spilled_runs == 0
    assert ext_report.spilled_runs == 300 // 7 - (300 % 7 == 0)  # the last run stays in memory
    assert ext_spill is not None and not ext_spill.exists()
    assert [t for t, _ in memory] == [t for t, _ in external]
    for (_, a), (_, b) in zip(memory, external, strict=True):
        for col in ("entity", "signal", "timestamp", "value"):
            np.testing.assert_array_equal(getattr(a, col), getattr(b, col))


def test_malformed_rows_are_reported_with_line_numbers_and_skipped(tmp_path: Path, topo: Topology) -> None:
    lines = [
        "30,gpu/n0000/0,gpu.temp_c,1",  # line 2
        "31,gpu/n0000/0,gpu.temp_c",  # 3: too few fields
        "32,gpu/n0000/0,gpu.temp_c,abc",  # 4
        "",  # 5: blank, ignored
        "33,,gpu.temp_c,1",  # 6
        "yesterday,gpu/n0000/0,gpu.temp_c,1",  # 7
        "34,gpu/n0000/0,gpu.temp_c, 7 ",  # 8: fine, whitespace is trimmed
        "inf,gpu/n0000/0,gpu.temp_c,1",  # 9
    ]
    good = [f"{40 + i},gpu/n0001/{i % 8},gpu.power_w,{i}" for i in range(20)]
    path = write_csv(tmp_path / "tel.csv", lines + good)
    rows, _, report = replay_rows([path], topo)
    assert report.malformed == 5
    assert report.rows == 27 and report.rows_used == 22
    assert report.malformed_examples == [
        f"{path}:3: 3 fields, expected 4: '31,gpu/n0000/0,gpu.temp_c'",
        f"{path}:4: value 'abc' is not a number",
        f"{path}:6: entity is empty",
        f"{path}:7: timestamp 'yesterday' is not a number (unix seconds)",
        f"{path}:9: timestamp 'inf' is not finite",
    ]
    assert (60.0, "gpu/n0000/0", "gpu.temp_c", 34.0, 7.0) in rows
    summary = report.summary_lines()
    assert (
        summary[1]
        == f"5 malformed rows skipped, e.g. {path}:3: 3 fields, expected 4: '31,gpu/n0000/0,gpu.temp_c'"
    )


def test_line_numbers_survive_block_boundaries(
    tmp_path: Path, topo: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_mod, "CSV_BLOCK_BYTES", 256)  # many blocks, parsed ahead of mapping
    lines = [f"{i},gpu/n0000/0,gpu.temp_c,{i}" for i in range(300)]
    bad_at = {
        60: "1,2",
        61: "5,gpu/n0000/0,gpu.temp_c,x",
        150: "1,2,3,4,5",
        151: "",
        233: "7,gpu/n0000/0,gpu.temp_c,?",
    }
    for line in sorted(bad_at):
        lines.insert(line - 2, bad_at[line])
    path = write_csv(tmp_path / "tel.csv", lines)
    _, _, report = replay_rows([path], topo)
    assert report.malformed == 4 and report.rows_used == 300
    assert [ex.split(":")[1] for ex in report.malformed_examples] == ["60", "61", "150", "233"]


def test_mostly_malformed_file_is_refused(tmp_path: Path, topo: Topology) -> None:
    lines = ["1;gpu/n0000/0;gpu.temp_c;1"] * 30 + ["30,gpu/n0000/0,gpu.temp_c,1"] * 10
    path = write_csv(tmp_path / "semicolons.csv", lines)
    with pytest.raises(InputError) as err:
        replay_rows([path], topo)
    assert err.value.where == str(path)
    assert "30 of 40 rows are malformed" in err.value.problem
    assert f"{path}:2: 1 fields, expected 4" in err.value.problem


def test_bad_header_names_missing_columns(tmp_path: Path, topo: Topology) -> None:
    path = write_csv(tmp_path / "tel.csv", ["1,gpu/n0000/0,1"], header="timestamp,entity,val\n")
    with pytest.raises(InputError) as err:
        read_telemetry([path], topo, CAT, tick_s=TICK)
    assert err.value.where == f"{path}:1"
    assert "lacks column(s) signal, value" in err.value.problem


def test_extra_csv_columns_are_ignored(tmp_path: Path, topo: Topology) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        ["a,30,gpu/n0000/0,gpu.temp_c,1,z"],
        header="host,timestamp,entity,signal,value,x\n",
    )
    rows, _, _ = replay_rows([path], topo)
    assert rows == [(30.0, "gpu/n0000/0", "gpu.temp_c", 30.0, 1.0)]


def test_unknown_signals_and_entities_are_counted_not_fatal(tmp_path: Path, topo: Topology) -> None:
    lines = (
        ["30,gpu/n0000/0,gpu.fan_rpm,1"] * 3
        + ["30,gpu/n9999/0,gpu.temp_c,1"] * 5
        + ["30,job/train-a,gpu.fan_rpm,1"]
        + ["30,job/train-a,gpu.temp_c,1", "30,switch/leaf00,gpu.temp_c,1", "30,storage/ckpt0,gpu.temp_c,1"]
    )
    path = write_csv(tmp_path / "t.csv", lines)
    rows, _, report = replay_rows([path], topo)
    assert report.unknown_signals == {"gpu.fan_rpm": 4}
    assert report.unknown_entities == {"gpu/n9999/0": 5}
    assert report.rows == 12 and report.rows_used == 3 and report.malformed == 0
    assert {r[1] for r in rows} == {"job/train-a", "switch/leaf00", "storage/ckpt0"}
    summary = report.summary_lines()
    assert "unknown signal 'gpu.fan_rpm' (4 rows) ignored" in summary
    assert "unknown entity 'gpu/n9999/0' (5 rows) ignored" in summary
    assert sum("gpu/n9999/0" in line for line in summary) == 1


def test_mostly_unknown_entities_are_reported_not_refused(tmp_path: Path, topo: Topology) -> None:
    path = write_csv(tmp_path / "t.csv", [f"30,gpu/x{i}/0,gpu.temp_c,1" for i in range(30)])
    rows, ticks, report = replay_rows([path], topo)
    assert rows == [] and ticks == []
    assert report.unknown_entity_rows == 30
    assert any("missing from the inventory" in line for line in report.summary_lines())


def test_missing_and_unsupported_paths_are_refused(tmp_path: Path, topo: Topology) -> None:
    with pytest.raises(InputError, match="not found"):
        read_telemetry([tmp_path / "nope.csv"], topo, CAT, tick_s=TICK)
    (tmp_path / "tel.json").write_text("{}")
    with pytest.raises(InputError, match="unsupported"):
        read_telemetry([tmp_path / "tel.json"], topo, CAT, tick_s=TICK)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no telemetry files"):
        read_telemetry([tmp_path / "empty"], topo, CAT, tick_s=TICK)


def test_directory_is_read_recursively(tmp_path: Path, topo: Topology) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    write_csv(tmp_path / "d" / "sub" / "b.csv", ["60,gpu/n0000/0,gpu.temp_c,2"])
    write_csv(tmp_path / "d" / "a.csv", ["30,gpu/n0000/0,gpu.temp_c,1"])
    (tmp_path / "d" / "_SUCCESS").write_text("")
    done: list[tuple[int, int]] = []
    rows, _, report = replay_rows([tmp_path / "d"], topo, progress=lambda a, b: done.append((a, b)))
    assert report.files == 2 and [r[4] for r in rows] == [1.0, 2.0]
    assert done[-1][0] == done[-1][1] > 0


def test_empty_and_nan_values_pass_through_as_nan(tmp_path: Path, topo: Topology) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        ["30,gpu/n0000/0,gpu.temp_c,", "30,gpu/n0000/1,gpu.temp_c,nan", "30,gpu/n0000/2,gpu.temp_c,4"],
    )
    rows, _, report = replay_rows([path], topo)
    values = [r[4] for r in rows]
    assert np.isnan(values[0]) and np.isnan(values[1]) and values[2] == 4.0
    assert report.malformed == 0 and report.missing_values == 2
