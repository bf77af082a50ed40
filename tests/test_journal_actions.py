"""Action results and notices in the journal: written, read back, and old journals upgraded losing nothing."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from seamguard.actuators.dispatch import Dispatcher, actuate
from seamguard.control.budgets import BudgetConfig
from seamguard.control.safety import SafetyLayer
from seamguard.control.safety_config import SafetyConfig
from seamguard.journal.records import ActionResultRecord, DecisionRecord, NoticeRecord
from seamguard.journal.sqlite import SCHEMA_VERSION, SqliteJournal
from seamguard.model.topology import build_topology
from tests.conftest import small_inventory

# The schema as version 3 of seamguard wrote it (before action results and notices).
V3_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '3');
CREATE TABLE transitions (id INTEGER PRIMARY KEY, ts REAL NOT NULL, entity TEXT NOT NULL, from_state TEXT NOT NULL,
    to_state TEXT NOT NULL, gfs REAL, prs REAL, fae REAL, reason TEXT NOT NULL, evidence TEXT NOT NULL,
    epoch INTEGER NOT NULL);
CREATE TABLE decisions (id INTEGER PRIMARY KEY, ts REAL NOT NULL, entity TEXT NOT NULL, action TEXT NOT NULL,
    mode TEXT NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL, evidence TEXT NOT NULL, epoch INTEGER NOT NULL,
    cause TEXT NOT NULL DEFAULT '', predicted_cost REAL, predicted_benefit REAL);
CREATE TABLE outcomes (id INTEGER PRIMARY KEY, ts REAL NOT NULL, entity TEXT NOT NULL, action TEXT NOT NULL,
    decided_at REAL NOT NULL, realised_cost REAL, realised_benefit REAL, note TEXT NOT NULL);
CREATE TABLE observations (id INTEGER PRIMARY KEY, ts REAL NOT NULL, entity TEXT NOT NULL, state TEXT NOT NULL,
    gfs REAL, prs REAL, fae REAL, evidence TEXT NOT NULL);
INSERT INTO transitions VALUES (1, 5.0, 'gpu/n1/0', 'healthy', 'quarantine', 0.9, 0.2, 3.0, 'hot',
    '[["level","gpu.temp_c",0.9,"91 C"]]', 4);
INSERT INTO decisions VALUES (1, 5.0, 'node/n1', 'drain_node', 'advise', 'hot', 'quarantine', '[]', 4,
    'gpu/n1/0', 1.5, NULL);
INSERT INTO outcomes VALUES (1, 50.0, 'node/n1', 'drain_node', 5.0, NULL, 2.0, 'paid');
INSERT INTO observations VALUES (1, 6.0, 'gpu/n1/0', 'quarantine', 0.9, 0.2, 3.0, '[]');
"""


def test_version_3_journal_upgrades_in_place_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V3_SCHEMA)
    db.commit()
    db.close()
    with SqliteJournal(path) as j:
        assert j.get_meta("schema_version") == str(SCHEMA_VERSION) == "8"
        (t,) = j.transitions()
        assert (t.entity, t.to_state, t.epoch, t.evidence[0].text) == ("gpu/n1/0", "quarantine", 4, "91 C")
        (d,) = j.decisions()
        assert (d.entity, d.cause, d.predicted_cost_gpu_h) == ("node/n1", "gpu/n1/0", 1.5)
        assert math.isnan(d.predicted_benefit_gpu_h)
        (o,) = j.outcomes()
        assert (o.note, o.realised_benefit_gpu_h) == ("paid", 2.0)
        assert len(j.observations()) == 1
        assert (
            j.action_results() == [] and j.notices() == [] and j.audit() == [] and j.operator_actions() == []
        )
        j.append_actions(
            [ActionResultRecord(60.0, "drain_node", "node/n1", "log", "advised", "would", 4, 5.0, 0)]
        )
    with SqliteJournal(path, create=False) as j:  # reopening a current journal changes nothing
        assert len(j.action_results()) == 1 and len(j.decisions()) == 1


def test_action_results_and_notices_round_trip_and_filter(tmp_path: Path) -> None:
    rows = [
        ActionResultRecord(1.0, "drain_node", "node/n1", "kubernetes", "failed", "503", 2, 0.5, 1),
        ActionResultRecord(3.0, "drain_node", "node/n1", "kubernetes", "done", "cordoned", 2, 0.5, 2),
        ActionResultRecord(2.0, "drain_node", "node/n2", "safety", "refused", "budget max_nodes", 2, 0.5, 0),
        ActionResultRecord(4.0, "resume_node", "node/n3", "safety", "held", "delay", 2, math.nan, 0),
    ]
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        j.append_actions(rows, [NoticeRecord(2.5, "safety", "error", "storm brake ON")])
        assert j.action_results()[:3] == sorted(rows[:3], key=lambda r: r.ts)  # the 4th has a NaN
        assert [r.attempt for r in j.action_results("node/n1")] == [1, 2]
        assert [r.target for r in j.action_results(status="refused")] == ["node/n2"]
        assert [r.ts for r in j.action_results(since=2.0, until=3.0)] == [2.0, 3.0]
        assert math.isnan(j.action_results("node/n3")[0].decided_at)
        assert j.notices() == [NoticeRecord(2.5, "safety", "error", "storm brake ON")]


def test_actuate_journals_every_outcome(tmp_path: Path) -> None:
    topo = build_topology(small_inventory(nodes=8, nodes_per_rack=4))
    cfg = SafetyConfig(budgets=BudgetConfig(max_nodes=1, partitions={}))
    safety = SafetyLayer(topo, cfg)
    decisions = [
        DecisionRecord(0.0, f"node/{n}", "drain_node", "advise", "q", "quarantine") for n in ("n00", "n05")
    ]
    with SqliteJournal(tmp_path / "j.sqlite") as j:
        results, _ = actuate(safety, Dispatcher([]), 0.0, decisions, journal=j)
        stored = j.action_results()
        assert stored == results
        assert [(r.target, r.actuator, r.status) for r in stored] == [
            ("node/n05", "safety", "refused"),
            ("node/n00", "log", "advised"),
        ]
