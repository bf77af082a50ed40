"""A peer baseline follows its cohort's membership: the idle links change as jobs start and end,
and a link's learnt offset must not hold the factors of the links that were idle when it learnt
(docs/performance.md, held-out seed 1220; scoring/peer_memory.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from seamguard.config import config_from_mapping
from seamguard.control.controller import Controller
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import Inventory, JobRecord, NodeRecord
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology, build_topology
from seamguard.telemetry.batch import TelemetryBatch

T0 = 1_000_000.0
SWAP = T0 + 2 * 3600.0  # job B (n09-n16) ends, job A (n01-n08) starts: the idle links swap
TICK_S = 30.0
BAD = {"degraded", "recovery_unsafe", "quarantine", "harmful", "failed"}
SIGNAL = "link.retransmits_total"


def swapping_fleet() -> Topology:
    """n00 idle all run; n01-n08 idle, then busy; n09-n16 busy, then idle."""
    recs = tuple(
        NodeRecord(node=f"n{i:02d}", rack=f"r{i % 4}", cdu="c0", leaf="l0", gpus=1, storage="ckpt0")
        for i in range(17)
    )
    jobs = (
        JobRecord("b", JobClass.SYNC_TRAINING, tuple(f"n{i:02d}" for i in range(9, 17)), 0.0, SWAP),
        JobRecord("a", JobClass.SYNC_TRAINING, tuple(f"n{i:02d}" for i in range(1, 9)), SWAP, 1e12),
    )
    return build_topology(Inventory(recs), jobs)


def rates_at(t: float, rise_at: float, rise: float) -> np.ndarray:
    """Retransmits/s per node: idle links of the first hours count 0.4/s, those of the last 0.08/s
    (optics differ by such factors all their life), n00 a steady 0.2/s (``rise`` x from
    ``rise_at``), busy links 2/s."""
    first = np.where(t < SWAP, 0.4, 2.0)
    last = np.where(t < SWAP, 2.0, 0.08)
    own = 0.2 * (rise if t >= rise_at else 1.0)
    return np.concatenate(([own], np.full(8, first), np.full(8, last)))


def run(
    hours: float, *, seed: int, rise_at: float = np.inf, rise: float = 1.0
) -> list[tuple[float, str, str]]:
    """Transitions (seconds into the run, entity, state) of a controller fed Poisson counts every 30 s."""
    topo = swapping_fleet()
    ctl = Controller(topo, config_from_mapping({"engine": {"tick_s": TICK_S}}))
    links = topo.members[EntityKind.LINK]
    assert [topo.ids[g] for g in links] == [f"link/n{i:02d}" for i in range(17)]
    sig = ctl.store.catalog[SIGNAL].index
    rng = np.random.default_rng(seed)
    totals = np.zeros(links.size)
    out: list[tuple[float, str, str]] = []
    now = T0
    for _ in range(int(hours * 3600 // TICK_S)):
        now += TICK_S
        totals += rng.poisson(rates_at(now, rise_at, rise) * TICK_S)
        batch = TelemetryBatch(links.astype(np.int64), np.full(links.size, sig, dtype=np.int64),
                               np.full(links.size, now - 1.0), totals.copy())  # fmt: skip
        result = ctl.tick(now, batch)
        out.extend((t.ts - T0, t.entity, t.to_state) for t in result.transitions)
    return out


def bad(
    out: list[tuple[float, str, str]], keep: Callable[[str], bool] = lambda e: True
) -> list[tuple[float, str, str]]:
    return [t for t in out if t[2] in BAD and keep(t[1])]


def test_a_steady_idle_link_is_not_an_outlier_when_its_cohort_is_replaced_under_it() -> None:
    """n00 learns at half the first idle links' rate; after the swap its unchanged rate is 2.5x
    the new idle links'. Judged against a level that followed the membership, it is their peer."""
    for seed in range(3):
        assert bad(run(5.0, seed=seed)) == [], seed


def test_a_link_whose_own_rate_rises_after_its_cohort_turned_over_is_still_caught() -> None:
    rise_at = SWAP + 1.5 * 3600.0
    for seed in range(3):
        hits = bad(run(5.0, seed=seed, rise_at=rise_at, rise=3.0))
        assert hits and {t[1] for t in hits} == {"link/n00"}, seed
        assert 0.0 <= hits[0][0] - (rise_at - T0) <= 900.0, (seed, hits[0])


def test_an_optic_failing_when_its_cohort_turns_over_does_not_teach_the_newcomers_its_rate() -> None:
    """n00 is the only learnt idle link left when the newcomers arrive, and it is failing: they
    learn against their own median, not against its failing level, and it stays flagged."""
    rise_at = SWAP - 1800.0
    out = run(3.5, seed=0, rise_at=rise_at, rise=3.0)
    mine = [t for t in out if t[1] == "link/n00"]
    assert bad(out, lambda e: e != "link/n00") == []
    assert mine and mine[0][2] in BAD and mine[0][0] <= SWAP - T0
    assert mine[-1][2] in BAD  # never cleared
