"""seamguard end to end over real protocols on loopback: the twin's GPUs run hot, seamguard drains
exactly as many of their nodes as its budget allows, and refuses the rest, naming the budget.

What runs (all real, all on 127.0.0.1, all started and stopped here):

- the digital twin (8 nodes x 8 GPUs, 2 racks, 1 CDU, one synchronous job on 7 nodes, a cold
  plate failing at once on one GPU of each of three nodes), its per-tick telemetry captured in
  advance with a fixed seed;
- the twin's DCGM exporter serving each captured tick in turn on ``/metrics``, and its Modbus/TCP
  BMS serving the CDU's and racks' values;
- the Debian Prometheus scraping the exporter every second;
- a Slurm cluster (munged, slurmctld, one slurmd per node) whose nodes carry the twin's names,
  with a batch job on the twin job's nodes;
- seamguard's ``Daemon`` (in this process) reading Prometheus's HTTP API, the Modbus server and
  Slurm, with the Slurm actuator enforcing and a budget of one quarantined node.

The daemon is stepped once per twin tick, after Prometheus has scraped that tick (a marker
series carries the tick number, so the wait is for a known change, never a blind sleep).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from seamguard.daemon import Daemon, StepReport
from seamguard.daemon_world import daemon_topology
from seamguard.journal.records import ActionResultRecord
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.catalog import signal_catalog
from seamguard.model.entities import EntityKind
from seamguard.model.inventory import INVENTORY_OPTIONAL, INVENTORY_REQUIRED, Inventory
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.site_config import DaemonConfig, load_daemon_config
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.sources.build import build_sources
from seamguard.twin.exporter import DcgmRenderer, MetricsServer, start_exporter
from seamguard.twin.modbus_server import TwinModbusServer, retarget, twin_register_map
from tests.prometheus_server import prometheus_binary, prometheus_server
from tests.slurm_cluster import SlurmCluster, require_slurm, slurm_cluster
from tests.twin_capture import captured_run

SEED = 0
HOT_GPUS = ("gpu/n0001/2", "gpu/n0003/5", "gpu/n0005/1")  # n0001 and n0003 share rack r000
FAULTED = tuple(g.split("/")[1] for g in HOT_GPUS)  # the nodes the twin degrades
JOB_NODES = tuple(f"n{i:04d}" for i in range(7))  # the twin's job takes the first 7 nodes
MAX_NODES = 1  # the budget: fewer than the three nodes the twin degrades
TEST_BUDGET_S = 90.0  # the whole drive, startup excluded
SCRAPE_WAIT_S = 10.0  # one tick's wait for Prometheus to scrape it
SETTLE_TICKS = 3  # ticks driven after the expected outcome, to see that it holds

SCENARIO: dict[str, Any] = {
    "name": "e2e",
    "description": "three GPUs on three nodes lose their cold plates early in a training run",
    "duration_h": 0.2,  # 24 twin ticks of 30 s
    "cluster": {"cdus": 1, "racks_per_cdu": 2, "nodes_per_rack": 4, "gpus_per_node": 8, "storage": ["ckpt0"]},
    "jobs": [{"name": "train", "class": "sync_training", "nodes": len(JOB_NODES), "checkpoint_gb": 100}],
    # a cold plate failing at once: +22.5 °C and HW thermal slowdown from 108 s (the 4th tick) on
    "faults": [{"kind": "hw_thermal", "target": g, "onset_h": 0.03, "severity": 1.5} for g in HOT_GPUS],
    "observation": {"dropout": 0.0, "sentinel_rate": 0.0},  # every tick has every value
}  # fmt: skip

# Merged over the defaults. One engine tick per second of wall time: staleness, trend windows and
# the score journaling scaled to it. Budgets other than max_nodes are opened up, so that the
# refusals can only come from max_nodes. The storm brake keeps its defaults: it needs new
# non-healthy entities spread over more than 2 CDUs (and leaves, and racks), and this fleet has one
# CDU, so no number of hot GPUs here can set it (asserted below).
TEST_POLICY: dict[str, Any] = {
    "engine": {"tick_s": 1, "stale_after_s": 10, "observe_every_s": 10},
    "scores": {"trend_window_s": 20, "trend_halflife_s": 10},
    "safety": {
        "budgets": {"max_nodes": MAX_NODES, "max_fleet_pct": 100, "domain_pct": 100, "per_hour": 100,
                    "per_hour_pct": 100, "partitions": {"fleet": None}},
    },
}  # fmt: skip


def twin_run() -> tuple[Topology, Inventory, tuple[TelemetryBatch, ...]]:
    """Every telemetry batch the twin emits in its run (fixed seed), captured at the emitter."""
    world, got = captured_run(SCENARIO, SEED)
    return world.topology, world.inventory, got


def write_inventory(inventory: Inventory, path: Path) -> Path:
    cols = (*INVENTORY_REQUIRED, *INVENTORY_OPTIONAL)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for n in inventory.nodes:
            w.writerow([getattr(n, c) for c in cols])
    return path


def marker(tick: int) -> str:
    """A series outside the DCGM mapping whose value says which twin tick Prometheus last scraped."""
    return f"# TYPE seamguard_e2e_tick gauge\nseamguard_e2e_tick {tick}\n"


def wait_scraped(url: str, tick: int, timeout_s: float = SCRAPE_WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{url}/api/v1/query", params={"query": "seamguard_e2e_tick"}, trust_env=False, timeout=5
        )
        result = r.json()["data"]["result"]
        seen = result[0]["value"][1] if result else None
        if seen == str(tick):
            return
        time.sleep(0.05)
    raise TimeoutError(
        f"Prometheus did not scrape twin tick {tick} within {timeout_s:g} s (last seen {seen})"
    )


def slurm_nodes(cluster: SlurmCluster) -> dict[str, tuple[str, str]]:
    """node -> (state, reason) as sinfo prints them (not through seamguard's own parser)."""
    out = cluster.run("sinfo", "-h", "-N", "-o", "%N|%T|%E").stdout
    rows = (line.split("|", 2) for line in out.splitlines() if line.strip())
    return {name: (state, "" if reason == "none" else reason) for name, state, reason in rows}


def drained(cluster: SlurmCluster) -> dict[str, str]:
    return {n: reason for n, (state, reason) in slurm_nodes(cluster).items() if state.startswith("drain")}


@dataclass
class Outcome:
    cluster: SlurmCluster
    daemon: Daemon
    journal: SqliteJournal
    prometheus_log: Path
    job_id: str
    twin_topology: Topology
    reports: list[StepReport] = field(default_factory=list)
    last_batch: TelemetryBatch = field(default_factory=TelemetryBatch.empty)  # the tick last served

    def twin_value(self, entity: str, signal: str) -> float:
        """The twin's latest sample of (entity, signal) in the tick last served."""
        b = self.last_batch
        pick = (b.entity == self.twin_topology.index[entity]) & (b.signal == signal_catalog()[signal].index)
        assert pick.any(), (entity, signal)
        return float(b.value[pick][np.argmax(b.timestamp[pick])])

    def results(self, status: str | None = None) -> list[ActionResultRecord]:
        return [a for r in self.reports for a in r.actions if status is None or a.status == status]

    def diagnosis(self) -> str:
        """What to read when the expected drains never come."""
        lines = [f"{len(self.reports)} tick(s) driven; last reports:"]
        for r in self.reports[-5:]:
            lines.append(f"  t={r.now:.1f} samples={r.samples} notices={[str(n) for n in r.notices]}")
            lines += [f"    {t.entity} {t.from_state}->{t.to_state}: {t.reason}" for t in r.transitions]
            lines += [f"    {a.kind} {a.target} {a.actuator} {a.status}: {a.detail}" for a in r.actions]
        lines.append("states: " + ", ".join(f"{k}={v}" for k, v in sorted(self.daemon_states().items())))
        lines.append(f"journal notices: {[n.message for n in self.journal.notices()][-10:]}")
        lines.append(f"slurm: {slurm_nodes(self.cluster)}")
        lines.append("--- prometheus log\n" + self.prometheus_log.read_text(errors="replace")[-1500:])
        ctld = self.cluster.root / "log" / "slurmctld.log"
        lines.append("--- slurmctld log\n" + "\n".join(ctld.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(lines)

    def daemon_states(self) -> dict[str, str]:
        """The engine's entities that are neither healthy nor unknown, with their state."""
        states = self.daemon.controller.states
        ids = self.daemon.topology.ids
        calm = (int(State.HEALTHY), int(State.UNKNOWN))
        return {ids[g]: State(int(s)).label for g, s in enumerate(states.tolist()) if s not in calm}

    def done(self) -> bool:
        """One drain carried out, and the other faulted nodes' drains refused by the budget."""
        taken = {a.target for a in self.results("done") if a.kind == "drain_node"}
        refused = {a.target for a in self.results("refused") if a.kind == "drain_node"}
        return len(taken) == MAX_NODES and {f"node/{n}" for n in FAULTED} <= taken | refused


@pytest.fixture
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    require_slurm()
    prometheus_binary()
    twin_topo, inventory, batches = twin_run()
    tmp = tmp_path_factory.mktemp("e2e")
    with ExitStack() as stack:
        cluster = stack.enter_context(
            slurm_cluster(
                tmp_path_factory.mktemp("slurm"), dead_nodes=0, names=twin_topo.names[EntityKind.NODE]
            )
        )
        job_id = cluster.submit(len(JOB_NODES), "train", 600, f"--nodelist={','.join(JOB_NODES)}")
        cluster.wait_for(f"job {job_id} to run", lambda: cluster.job_state(job_id) == "RUNNING")

        renderer = DcgmRenderer(twin_topo)
        exporter: MetricsServer = start_exporter(renderer.render(batches[0]) + marker(-1))
        stack.callback(exporter.stop)
        bms = stack.enter_context(TwinModbusServer(twin_register_map(twin_topo), "127.0.0.1", 0))
        bms.update_from_batch(batches[0], twin_topo)
        prom_dir = tmp / "prometheus"
        prom_dir.mkdir()
        prom = stack.enter_context(prometheus_server([f"127.0.0.1:{exporter.port}"], prom_dir))
        wait_scraped(prom, -1, timeout_s=30)

        slurm = {"scontrol": cluster.bins["scontrol"], "squeue": cluster.bins["squeue"],
                 "slurm_conf": str(cluster.conf)}  # fmt: skip
        bms_map = retarget(twin_register_map(twin_topo), "127.0.0.1", bms.port)
        policy = {
            **TEST_POLICY,
            "sources": {
                # the twin serves the whole fleet from one exporter: one target, many nodes
                "prometheus": {"url": prom, "timeout_s": 5, "one_node_per_target": False},
                "modbus": bms_map.model_dump(mode="json"),
                "slurm": slurm,
            },
            "actuators": {"slurm": {**slurm, "mode": "enforce"}},
        }
        config_path = tmp / "seamguard.yaml"
        config_path.write_text(yaml.safe_dump(policy), encoding="utf-8")
        config: DaemonConfig = load_daemon_config(config_path)
        topology = daemon_topology(config, write_inventory(inventory, tmp / "inventory.csv"), None)
        journal = SqliteJournal(tmp / "journal.sqlite")
        stack.callback(journal.close)
        sources = build_sources(config.site.sources, topology)
        for s in sources:
            close = getattr(s, "close", None)
            if callable(close):
                stack.callback(close)
        daemon = Daemon(config, topology, sources, journal=journal)
        out = Outcome(cluster, daemon, journal, prom_dir / "prometheus.log", job_id, twin_topo)

        started = time.monotonic()
        settle = 0
        for k, batch in enumerate(batches):
            if time.monotonic() - started > TEST_BUDGET_S:
                pytest.fail(f"no expected outcome within {TEST_BUDGET_S:g} s\n{out.diagnosis()}")
            exporter.publish(renderer.render(batch) + marker(k))
            bms.update_from_batch(batch, twin_topo)
            try:
                wait_scraped(prom, k)
            except TimeoutError as exc:
                pytest.fail(f"{exc}\n{out.diagnosis()}")
            out.reports.append(daemon.step(time.time()))
            out.last_batch = batch
            settle += out.done()
            if settle > SETTLE_TICKS:
                break
        else:
            pytest.fail(
                f"the twin's {len(batches)} ticks ran out before the expected drains\n{out.diagnosis()}"
            )
        yield out


def check_the_budget_drains_exactly_its_share_of_the_degraded_nodes(outcome: Outcome) -> None:
    got = drained(outcome.cluster)
    assert len(got) == MAX_NODES, outcome.diagnosis()
    for node, reason in got.items():
        assert node in FAULTED, f"{node} drained but the twin degrades only {FAULTED}"
        assert reason.startswith("seamguard:"), reason
        assert "quarantine" in reason.split()[:2], f"the reason names the state: {reason!r}"
    done = [a for a in outcome.results("done") if a.kind == "drain_node"]
    assert [a.actuator for a in done] == ["slurm"] * MAX_NODES


def check_the_other_degraded_nodes_are_refused_by_the_budget_and_journaled(outcome: Outcome) -> None:
    got = drained(outcome.cluster)
    others = [n for n in FAULTED if n not in got]
    assert len(others) == len(FAULTED) - MAX_NODES
    states = slurm_nodes(outcome.cluster)
    refused = outcome.journal.action_results(status="refused")
    for node in others:
        assert not states[node][0].startswith("drain") and not states[node][1], states[node]
        mine = [r for r in refused if r.target == f"node/{node}" and r.kind == "drain_node"]
        assert len(mine) == 1, f"{node}: one refusal journaled, got {mine}"
        assert mine[0].actuator == "safety"
        assert mine[0].detail.startswith(f"budget max_nodes: {MAX_NODES} of at most {MAX_NODES}"), mine[0]
    # queued, not dropped: the refused drains wait for the budget to free
    assert sorted(a.target for a in outcome.daemon.safety.queued()) == [f"node/{n}" for n in others]


def check_healthy_nodes_are_untouched(outcome: Outcome) -> None:
    states = slurm_nodes(outcome.cluster)
    healthy = [n for n in states if n not in FAULTED]
    assert len(healthy) == 5
    for n in healthy:
        state, reason = states[n]
        assert state in ("idle", "mixed", "allocated"), (n, state)
        assert not reason, (n, reason)
        assert not outcome.journal.action_results(target=f"node/{n}"), n
    assert outcome.cluster.job_state(outcome.job_id) == "RUNNING"  # a drain lets the job run on


def check_every_source_reached_the_engine_without_notices(outcome: Outcome) -> None:
    for r in outcome.reports:
        assert not r.notices, [str(n) for n in r.notices]
    assert not outcome.journal.notices(), "no source or safety notice journaled"
    store, topo = outcome.daemon.controller.store, outcome.daemon.topology
    now = outcome.reports[-1].now
    # Modbus: the CDU's flow and every rack's inlet, fresh at the last tick
    for signal, kind in (("cdu.flow_lpm", EntityKind.CDU), ("rack.inlet_temp_c", EntityKind.RACK)):
        fresh = store.fresh(signal)[: topo.count(kind)]
        assert fresh.all(), signal
        assert np.all(now - store.last_seen(signal)[: topo.count(kind)] < 5), signal
    # ...with the values the twin served at that tick (float32 flow, hundredths of a degree)
    flow = float(store.current("cdu.flow_lpm")[0])
    assert flow == pytest.approx(outcome.twin_value("cdu/cdu0", "cdu.flow_lpm"), rel=1e-6) and flow > 0
    supply = float(store.current("cdu.supply_temp_c")[0])
    assert abs(supply - outcome.twin_value("cdu/cdu0", "cdu.supply_temp_c")) <= 0.005 + 1e-9
    # DCGM through Prometheus: every GPU's temperature, the hot ones as the twin served them
    gpus = topo.count(EntityKind.GPU)
    assert store.fresh("gpu.temp_c")[:gpus].all()
    temps = store.current("gpu.temp_c")
    for gpu in HOT_GPUS:
        assert temps[int(topo.local[topo.index[gpu]])] == outcome.twin_value(gpu, "gpu.temp_c")
    # Slurm: its placement is the engine's job (the Slurm job id), on the twin job's nodes
    assert [(j.job, j.nodes) for j in topo.jobs] == [(outcome.job_id, JOB_NODES)]
    assert all(r.samples > gpus for r in outcome.reports)


def check_the_storm_brake_stayed_off(outcome: Outcome) -> None:
    brake = outcome.daemon.safety.brake
    assert not brake.engaged
    _, spread = brake.spread()
    assert spread["cdu"] <= outcome.daemon.config.site.safety.storm.max_domains  # one CDU: no storm possible


def test_hot_gpus_are_drained_within_the_budget_over_real_protocols(outcome: Outcome) -> None:
    """One test, so that ``pytest -n 2`` never starts this Slurm cluster and Prometheus twice."""
    check_the_budget_drains_exactly_its_share_of_the_degraded_nodes(outcome)
    check_the_other_degraded_nodes_are_refused_by_the_budget_and_journaled(outcome)
    check_healthy_nodes_are_untouched(outcome)
    check_every_source_reached_the_engine_without_notices(outcome)
    check_the_storm_brake_stayed_off(outcome)
