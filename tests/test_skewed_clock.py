"""A node whose exporter's clock is skewed: which clock is whose, and a counter's rate on it.

The field suite's seed 2 put a GPU `recovery_unsafe` on one correctable ECC error in 30 s read
as one a second: its node's exporter ran 90 s behind, its heartbeat (stamped by the prober, on
the right clock) shared the exporter's clock domain, so the domain's offset jumped between 90 s
and 0 from tick to tick, and two samples 30 s apart on the exporter's clock were re-timed 1 s
apart. The rate's interval now comes from the source's own stamps, and the node's own signals
are a clock domain apart from its exporter's.
"""

from __future__ import annotations

import numpy as np

from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, NodeRecord
from seamguard.model.topology import Topology, build_topology
from seamguard.telemetry.clock import skew_notices
from seamguard.telemetry.store import TelemetryStore
from tests.test_robust_detection import Row, batch

CAT = signal_catalog()
SKEW_S = 90.0  # n00's exporter clock runs this far behind
TICK_S = 10.0


def fleet(nodes: int = 12) -> Topology:
    recs = tuple(
        NodeRecord(node=f"n{i:02d}", rack=f"r{i:02d}", cdu="c0", leaf="l0", gpus=2, storage="s0")
        for i in range(nodes)
    )
    return build_topology(Inventory(recs), ())


def run(
    deliveries: dict[int, tuple[float, float | None]],
) -> tuple[TelemetryStore, int, list[float], list[float]]:
    """Ticks every 10 s. Every GPU but n00's sends a temperature each tick, read 1 s before it.
    n00's GPU 0 reads its ECC total every 30 s of its own clock, one more error each time;
    ``deliveries[k] = (counter lag, n00's temperature lag or None)`` for a tick ``k`` that
    carries a counter sample, and n00 sends its temperatures 1 s late in the other ticks. n00's
    stamps are SKEW_S behind. Returns the store, the GPU's local index, and its rate (per hour)
    and its node's re-timing offset after each counter sample."""
    topo = fleet()
    store = TelemetryStore(topo, CAT, window=8, clock_skew_s=20.0, tick_s=TICK_S)
    gpus = [int(g) for g in topo.members[EntityKind.GPU]]
    skewed = [g for g in gpus if topo.ids[g].startswith("gpu/n00/")]
    target = skewed[0]
    start, read_at, total = 10_000.0, None, 0.0
    rates: list[float] = []
    offsets: list[float] = []
    assert store.clock is not None
    for k in range(80):
        now = start + TICK_S * k
        rows: list[Row] = [(g, "gpu.temp_c", now - 1.0, 60.0) for g in gpus if g not in skewed]
        counter_lag, temp_lag = deliveries.get(k, (None, 1.0))
        if temp_lag is not None:
            rows += [(g, "gpu.temp_c", now - temp_lag - SKEW_S, 60.0) for g in skewed]
        if counter_lag is not None:
            read_at = now - counter_lag if read_at is None else read_at + 30.0
            assert abs(now - counter_lag - read_at) < 1e-9, "the exporter reads every 30 s"
            total += 1.0
            rows.append((target, "gpu.ecc_sbe_total", read_at - SKEW_S, total))
        store.ingest(now, batch(rows))
        if counter_lag is not None:
            rates.append(float(store.rate("gpu.ecc_sbe_total")[topo.local[target]]) * 3600.0)
            offsets.append(float(store.clock.offset[store.clock.domain[target]]))
    return store, int(topo.local[target]), rates, offsets


def test_a_counter_on_a_skewed_clock_whose_offset_moves_keeps_its_true_rate() -> None:
    """Reads 30 s apart, delivered alternately 29.5 s late alone (the node's newest sample: the
    tick's offset is 29.5 s over its clock error) and 9.5 s late with a temperature read 0.5 s
    before the tick (offset 0.5 s over): the re-timed stamps of consecutive samples are 1 s and
    59 s apart, the exporter's own always 30 s. One error in 30 s is 120/h, not 3,600/h."""
    deliveries: dict[int, tuple[float, float | None]] = {}
    for i in range(10):  # read at 9,980.5 + 30 j on the true clock (j = 2i late, 2i + 1 not)
        deliveries[1 + 6 * i] = (29.5, None)
        deliveries[2 + 6 * i] = (9.5, 0.5)
    _store, _local, rates, offsets = run(deliveries)
    assert offsets[2:] == [SKEW_S + 28.5, SKEW_S - 0.5] * 9  # (the others are 1 s late)
    assert len(rates) == 20 and rates[1:] == [120.0] * 19, rates


def test_a_counter_on_a_steadily_skewed_clock_keeps_its_true_rate_and_stays_fresh() -> None:
    store, local, rates, offsets = run(
        {k: (1.0, 1.0) for k in range(1, 80, 3)}
    )  # read every 30 s, sent 1 s later
    assert offsets == [SKEW_S] * 27
    assert len(rates) == 27 and rates[1:] == [120.0] * 26, rates
    # placed in time by the corrected stamp: 1 s old, not 91 s (the clock's error)
    assert store.now - store.last_seen("gpu.ecc_sbe_total")[local] == 1.0


def test_a_nodes_heartbeat_on_the_probers_clock_does_not_undo_its_exporters_correction() -> None:
    """n00's exporter runs 90 s behind; every node's heartbeat age comes every other tick from a
    prober on the right clock, its Slurm flag every tick from the daemon. The exporter is
    corrected once, for good, by its own offset, and every GPU sample is kept and fresh."""
    topo = fleet()
    store = TelemetryStore(topo, CAT, window=8, clock_skew_s=20.0, tick_s=TICK_S)
    gpus = [int(g) for g in topo.members[EntityKind.GPU]]
    nodes = [int(n) for n in topo.members[EntityKind.NODE]]
    skewed = [g for g in gpus if topo.ids[g].startswith("gpu/n00/")]
    notices: list[str] = []
    for k in range(60):
        now = 10_000.0 + TICK_S * k
        rows: list[Row] = [
            (g, "gpu.temp_c", now - 1.0 - (SKEW_S if g in skewed else 0.0), 60.0 + k) for g in gpus
        ]
        rows += [(n, "node.slurm_down", now, 0.0) for n in nodes]
        if k % 2:
            rows += [(n, "node.heartbeat_age_s", now - 0.5, 3.0) for n in nodes]
        store.ingest(now, batch(rows))
        notices += skew_notices(topo, store.clock.changes) if store.clock is not None else []
        if k:  # every GPU's sample of this tick is its newest, placed 1 s ago (within the
            # reference's own spread: the typical lag is a median over every domain)
            assert np.allclose(store.now - store.last_seen("gpu.temp_c"), 1.0, atol=1.0), k
            assert np.all(store.current("gpu.temp_c") == 60.0 + k), k
    assert len(notices) == 1 and "node/n00 90 s behind" in notices[0], notices
    assert store.clock is not None
    assert np.allclose(store.clock.offset[store.clock.domain[skewed]], SKEW_S, atol=1.0)
    assert not np.any(store.clock.offset[nodes]), "the node's own signals are stamped right"
