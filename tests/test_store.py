from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.topology import Topology, build_topology
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.store import TelemetryStore
from tests.conftest import small_inventory

CAT = signal_catalog()


def batch(topo: Topology, rows: list[tuple[str, str, float, float]]) -> TelemetryBatch:
    ent = np.array([topo.index[e] for e, _, _, _ in rows], dtype=np.int64)
    sig = np.array([CAT[s].index for _, s, _, _ in rows], dtype=np.int64)
    ts = np.array([t for _, _, t, _ in rows], dtype=np.float64)
    val = np.array([v for _, _, _, v in rows], dtype=np.float64)
    return TelemetryBatch(ent, sig, ts, val)


def test_latest_sample_wins_and_missing_stays_nan(topology: Topology) -> None:
    store = TelemetryStore(topology, CAT, history_signals=["gpu.temp_c"])
    store.ingest(
        30.0,
        batch(topology, [("gpu/n00/0", "gpu.temp_c", 29.0, 71.0), ("gpu/n00/0", "gpu.temp_c", 12.0, 60.0)]),
    )
    cur = store.current("gpu.temp_c")
    assert cur[0] == 71.0
    assert np.isnan(cur[1:]).all()  # never zero for missing data


def test_sentinels_and_nonfinite_are_missing(topology: Topology) -> None:
    store = TelemetryStore(topology, CAT)
    rep = store.ingest(
        30.0,
        batch(
            topology,
            [
                ("gpu/n00/0", "gpu.temp_c", 29.0, 9223372036854775794.0),
                ("gpu/n00/1", "gpu.temp_c", 29.0, float(2**62)),
                ("gpu/n00/2", "gpu.temp_c", 29.0, float("inf")),
                ("gpu/n00/3", "gpu.temp_c", 29.0, 65.0),
            ],
        ),
    )
    assert rep.sentinel == 2 and rep.nonfinite == 1 and rep.accepted == 1
    cur = store.current("gpu.temp_c")
    assert np.isnan(cur[:3]).all() and cur[3] == 65.0


def test_values_go_stale(topology: Topology) -> None:
    store = TelemetryStore(topology, CAT, stale_after_s=60)
    store.ingest(30.0, batch(topology, [("gpu/n00/0", "gpu.temp_c", 30.0, 70.0)]))
    store.ingest(60.0, TelemetryBatch.empty())
    assert store.current("gpu.temp_c")[0] == 70.0  # carried forward while fresh
    store.ingest(120.0, TelemetryBatch.empty())
    assert np.isnan(store.current("gpu.temp_c")[0])


def test_a_signal_never_reported_reads_as_none_not_as_missing_everywhere(topology: Topology) -> None:
    """A site may send no step time at all: until one entity reports it, ``reported`` is None (a
    job's silence says nothing); after that, silence is missing data, and stays so when stale."""
    store = TelemetryStore(topology, CAT, stale_after_s=60)
    store.ingest(30.0, batch(topology, [("gpu/n00/0", "gpu.temp_c", 30.0, 70.0)]))
    assert store.reported("gpu.step_time_s") is None
    assert store.reported("no.such_signal") is None
    store.ingest(60.0, batch(topology, [("gpu/n00/1", "gpu.step_time_s", 60.0, 2.0)]))
    step = store.reported("gpu.step_time_s")
    assert step is not None and step[1] == 2.0 and np.isnan(step[0])
    store.ingest(200.0, TelemetryBatch.empty())
    later = store.reported("gpu.step_time_s")
    assert later is not None and np.isnan(later).all()


def test_a_counter_reset_gives_no_rate_for_its_sample_and_is_counted(topology: Topology) -> None:
    """1100 -> 40 is a reset (reboot, driver reload): whether 40 or 4,000 happened across it is
    unknown, so that sample has no rate; the next one is measured from 40 again."""
    store = TelemetryStore(topology, CAT)
    e = "link/n00"
    store.ingest(10.0, batch(topology, [(e, "link.retransmits_total", 10.0, 1000.0)]))
    rep = store.ingest(20.0, batch(topology, [(e, "link.retransmits_total", 20.0, 1100.0)]))
    assert store.rate("link.retransmits_total")[0] == 10.0 and rep.resets == 0
    rep = store.ingest(30.0, batch(topology, [(e, "link.retransmits_total", 30.0, 40.0)]))
    assert np.isnan(store.rate("link.retransmits_total")[0])  # never the 40 taken as an increase
    assert rep.resets == 1 and rep.accepted == 1
    rep = store.ingest(40.0, batch(topology, [(e, "link.retransmits_total", 40.0, 70.0)]))
    assert store.rate("link.retransmits_total")[0] == 3.0 and rep.resets == 0


def test_kind_mismatch_is_refused(topology: Topology) -> None:
    store = TelemetryStore(topology, CAT)
    rep = store.ingest(30.0, batch(topology, [("node/n00", "gpu.temp_c", 30.0, 70.0)]))
    assert rep.kind_mismatch == 1 and rep.accepted == 0


def test_bitmask_duplicates_are_ored(topology: Topology) -> None:
    store = TelemetryStore(topology, CAT)
    store.ingest(
        30.0,
        batch(
            topology,
            [
                ("gpu/n00/0", "gpu.throttle_reasons", 10.0, 0x40),
                ("gpu/n00/0", "gpu.throttle_reasons", 20.0, 0x4),
            ],
        ),
    )
    assert int(store.current("gpu.throttle_reasons")[0]) == 0x44


def test_events_keep_every_occurrence(topology: Topology) -> None:
    store = TelemetryStore(topology, CAT)
    store.ingest(
        30.0, batch(topology, [("gpu/n00/0", "gpu.xid", 10.0, 63), ("gpu/n00/0", "gpu.xid", 20.0, 48)])
    )
    ev = store.events("gpu.xid")
    assert ev is not None and sorted(ev.code.tolist()) == [48, 63]
    store.ingest(60.0, TelemetryBatch.empty())
    assert store.events("gpu.xid") is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 31), st.floats(0, 29.9), st.one_of(st.floats(-1e3, 1e3), st.just(float("nan")))
        ),
        max_size=60,
    )
)
def test_store_invariants(rows: list[tuple[int, float, float]]) -> None:
    """Whatever arrives, the current value is either NaN or the latest finite sample of that GPU
    inside the signal's physical range (a value outside it is not a measurement)."""
    topo = build_topology(small_inventory())
    store = TelemetryStore(topo, CAT)
    gpus = topo.members[EntityKind.GPU]
    ent = gpus[np.array([r[0] for r in rows], dtype=np.int64)] if rows else np.zeros(0, np.int64)
    b = TelemetryBatch(
        ent.astype(np.int64),
        np.full(len(rows), CAT["gpu.temp_c"].index, dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.float64),
        np.array([r[2] for r in rows], dtype=np.float64),
    )
    store.ingest(30.0, b)
    cur = store.current("gpu.temp_c")
    lo, hi = CAT["gpu.temp_c"].range or (-np.inf, np.inf)
    for g in range(gpus.size):
        mine = [(t, v) for (i, t, v) in rows if i == g and lo <= v <= hi]  # NaN compares False
        if not mine:
            assert np.isnan(cur[g])
        else:
            latest = max(mine, key=lambda tv: tv[0])[0]
            assert cur[g] in {v for t, v in mine if t == latest}
