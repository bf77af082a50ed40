"""The Slurm source and actuator against a real Slurm (slurmctld, four slurmd, munge) on loopback,
plus parsing tests on text the cluster itself produces and on edge cases."""

from __future__ import annotations

import getpass
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from seamguard.actuators.base import Actuator
from seamguard.actuators.slurm import SlurmActuator, drain_reason, node_of
from seamguard.model.actions import Action, ActionStatus
from seamguard.model.catalog import SignalCatalog, signal_catalog
from seamguard.model.inventory import Inventory, NodeRecord
from seamguard.model.states import JobClass
from seamguard.model.topology import build_topology
from seamguard.telemetry.sources.base import Source
from seamguard.telemetry.sources.slurm import (
    SLURM_SIGNALS,
    SlurmSnapshot,
    SlurmSource,
    job_placements,
    read_snapshot,
)
from seamguard.telemetry.sources.slurm_commands import SlurmConfig, run_command
from seamguard.telemetry.sources.slurm_records import REASON_PREFIX, expand_hostlist
from seamguard.telemetry.sources.slurm_states import parse_node_state
from seamguard.telemetry.sources.slurm_text import parse_jobs, parse_kv_line, parse_node_line
from tests.slurm_cluster import SlurmCluster, slurm_cluster

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture(scope="module")
def job(cluster: SlurmCluster) -> str:
    """A batch job spread across two nodes, RUNNING for the whole module."""
    job_id = cluster.submit(2, "sg-train")
    cluster.wait_for(f"job {job_id} to run", lambda: cluster.job_state(job_id) == "RUNNING")
    return job_id


@pytest.fixture
def config(cluster: SlurmCluster) -> SlurmConfig:
    return SlurmConfig(
        scontrol=cluster.bins["scontrol"],
        squeue=cluster.bins["squeue"],
        sinfo=cluster.bins["sinfo"],
        slurm_conf=str(cluster.conf),
    )


def action(
    kind: str, node: str, state: str = "quarantine", reason: str = "gpu.temp_c 91 degC", **params: str
) -> Action:
    return Action(kind, f"node/{node}", reason, state, decided_at=1.0e9, params=tuple(params.items()))


def inventory(names: list[str]) -> Inventory:
    return Inventory(tuple(NodeRecord(n, "r0", "c0", "l0", 8) for n in names))


def release(cluster: SlurmCluster) -> tuple[int, int, str]:
    """``sinfo --version`` (``slurm-wlm 22.05.8``) -> (22, 5, "22.05.8")."""
    text = cluster.run("sinfo", "--version").stdout.split()[-1]
    major, minor = text.split(".")[:2]
    return int(major), int(minor), text


def json_forms(cluster: SlurmCluster) -> dict[str, str]:
    """The forms the reader settles on for the installed Slurm (docs/slurm.md)."""
    major, minor, text = release(cluster)
    if (major, minor) < (23, 2):  # openapi/v0.0.37 (21.08) or v0.0.38 (22.05)
        plugin = f"openapi/v0.0.{37 if (major, minor) < (22, 5) else 38}, Slurm {text}"
        return {
            "nodes": f"sinfo --json ({plugin})",
            "jobs": f"squeue --json ({plugin})",
            "reservations": "text",
        }
    forms = {
        part: f"{cmd} --json"
        for part, cmd in (("nodes", "scontrol"), ("jobs", "squeue"), ("reservations", "scontrol"))
    }
    return forms  # data_parser/v0.0.39+: the plugin name is checked by prefix


def state_of(line: str) -> str:
    fields, _ = parse_kv_line(line)
    return fields["State"]


# ---------------------------------------------------------------- parsing edge cases (no Slurm needed)


# The state table, every fixture and the free-text Reason: tests/test_slurm_fixtures.py.


def test_garbage_is_not_a_node() -> None:
    assert parse_node_line("slurm_load_node error: Unable to contact slurm controller") is None
    assert parse_node_line("State=IDLE") is None


def test_squeue_lines_with_a_pipe_in_the_name_and_bad_lines() -> None:
    text = (
        "17|RUNNING|gpu|bob|3|2026-01-02T03:04:05|NONE|n[001-002],n007|train | run=3\n"
        "18|PENDING|gpu|bob|2|N/A|N/A||waits\n"
        "19|RUNNING|gpu|bob|3|2026-01-02T03:04:05|NONE|n[001-002]|count mismatch\n"
        "not a squeue line\n"
        "%i|idle|main*|Unknown|4|all|N/A|n[001-004]|%j\n"
        "20_[1-4%2]|PENDING|gpu|bob|1|N/A|N/A||array\n"
    )
    jobs, bad = parse_jobs(text)
    assert [j.job_id for j in jobs] == ["17", "18", "20_[1-4%2]"]
    assert jobs[0].name == "train | run=3"
    assert jobs[0].nodes == ("n001", "n002", "n007")
    assert jobs[0].end is None and jobs[1].start is None and jobs[1].nodes == ()
    assert len(bad) == 3 and "19" in bad[0] and "not a squeue line" in bad[1] and "'%i'" in bad[2]
    with pytest.raises(ValueError, match="bad hostlist"):
        expand_hostlist("n[001-")


def test_placements_map_partitions_to_classes_and_open_ended_jobs_to_inf() -> None:
    jobs, _ = parse_jobs(
        "5|RUNNING|infer|u|1|2026-01-02T03:04:05|2026-01-02T04:04:05|n1|a\n"
        "6|RUNNING|train|u|2|2026-01-02T03:04:05|NONE|n[2-3]|b\n"
        "7|PENDING|train|u|2|N/A|N/A||c\n"
    )
    cfg = SlurmConfig(partition_classes={"infer": JobClass.ASYNC_BATCH_INFERENCE})
    recs = job_placements(SlurmSnapshot(0.0, jobs=jobs), cfg)
    assert [(r.job, r.job_class, r.nodes) for r in recs] == [
        ("5", JobClass.ASYNC_BATCH_INFERENCE, ("n1",)),
        ("6", JobClass.SYNC_TRAINING, ("n2", "n3")),
    ]
    assert recs[0].end - recs[0].start == 3600.0
    assert math.isinf(recs[1].end)


def test_drain_reason_is_one_line_and_cut_to_the_byte_limit() -> None:
    act = action("drain_node", "n1", reason="gpu.temp_c\n 91 degC " + "é" * 400)
    reason = drain_reason(act, 120)
    assert reason.startswith("seamguard: quarantine gpu.temp_c 91 degC é")
    assert "\n" not in reason and reason.endswith("...")
    assert len(reason.encode()) <= 120
    assert drain_reason(action("drain_node", "n1"), 120) == "seamguard: quarantine gpu.temp_c 91 degC"
    # A GPU's drain: the planner's reason names the GPU and its state; the reason says the state once.
    caused = Action("drain_node", "node/n1", "gpu/n1/2 quarantine: gpu.temp_c 97 degC", "quarantine", 0.0)
    assert drain_reason(caused, 120) == "seamguard: quarantine gpu/n1/2: gpu.temp_c 97 degC"


def test_targets_and_feature_params_are_checked() -> None:
    assert node_of("node/n0123") == "n0123"
    assert node_of("gpu/n0123/5") == "n0123"
    with pytest.raises(ValueError, match="node/NAME"):
        node_of("rack/r07")
    act = SlurmActuator(SlurmConfig(scontrol="/nonexistent/scontrol"))
    with pytest.raises(ValueError, match="only manages features named sg_"):
        act.apply(action("set_features", "n1", add="gpu"), 0.0)
    with pytest.raises(ValueError, match="does not carry out"):
        act.apply(action("cordon", "n1"), 0.0)


def test_commands_that_cannot_run_or_hang_are_results_not_exceptions(tmp_path: Path) -> None:
    missing = run_command(SlurmConfig(), [str(tmp_path / "no-such-scontrol"), "show", "node"])
    assert not missing.ok and "could not run" in missing.problem
    slow = run_command(SlurmConfig(timeout_s=0.2), ["sleep", "5"])
    assert not slow.ok and "timed out after 0.2s" in slow.problem
    res = SlurmActuator(SlurmConfig(scontrol=str(tmp_path / "no-such-scontrol"))).apply(
        action("drain_node", "n1"), 5.0
    )
    assert res.status is ActionStatus.FAILED and "could not run" in res.detail and res.finished_at == 5.0


# ---------------------------------------------------------------- against the real cluster


def test_a_stuck_wait_names_what_it_waited_for_and_shows_the_daemon_logs(cluster: SlurmCluster) -> None:
    with pytest.raises(
        RuntimeError, match=r"(?s)waiting for the impossible.*slurmctld\.log.*slurmd\.n001\.log"
    ):
        cluster.wait_for("the impossible", lambda: False, timeout=0.3)


def test_hostlist_expansion_agrees_with_scontrol(cluster: SlurmCluster) -> None:
    for text in ("n[001-004]", "n[001-002,004],gpu-a[1-2]-b[08-10]", "x7", "rack[1-2]n[1,3]"):
        want = cluster.run("scontrol", "show", "hostnames", text).stdout.split()
        assert expand_hostlist(text) == want, text


def test_source_sees_the_nodes_and_the_jobs_placement(
    cluster: SlurmCluster, job: str, config: SlurmConfig
) -> None:
    snap, notices = read_snapshot(config, now=123.0)
    assert notices == ()  # before 23.02 scontrol has no --json: refused, and nothing to say about it
    assert snap.read == {"nodes", "jobs", "reservations"}
    assert dict(snap.forms) == json_forms(cluster)
    assert [n.name for n in snap.nodes] == [*cluster.nodes, *cluster.dead_nodes]
    for n in snap.nodes:
        assert n.features == ("gpu", "h100") and n.active_features == ("gpu", "h100")
        assert not n.drained and not n.reserved
    running = snap.running_jobs()
    assert [j.job_id for j in running] == [job]
    (sjob,) = running
    assert sjob.name == "sg-train" and sjob.user == getpass.getuser() and len(sjob.nodes) == 2
    compact = cluster.run("squeue", "-h", "-j", job, "-o", "%N").stdout.strip()
    assert list(sjob.nodes) == cluster.run("scontrol", "show", "hostnames", compact).stdout.split()
    for name in sjob.nodes:  # the job's nodes are busy, the others idle
        node = snap.node(name)
        assert node is not None and node.base in ("MIXED", "ALLOCATED")
    assert {snap.node(n).base for n in cluster.nodes if n not in sjob.nodes} == {"IDLE"}  # type: ignore[union-attr]
    assert sjob.start is not None and abs(sjob.start - time.time()) < 600

    source: Source = SlurmSource(build_topology(inventory(list(cluster.nodes))), config)
    assert isinstance(source, SlurmSource) and source.placements() is None  # nothing polled yet
    source.collect(now=124.0)
    assert source.placements() == job_placements(snap, config)
    (rec,) = job_placements(snap, config)
    assert rec.job == job and rec.nodes == sjob.nodes and rec.job_class is JobClass.SYNC_TRAINING
    topo = build_topology(inventory([n.name for n in snap.nodes]), [rec])
    assert topo.lookup(f"job/{job}") is not None


def test_the_json_and_text_forms_read_the_same_cluster(
    cluster: SlurmCluster, job: str, config: SlurmConfig
) -> None:
    """A running job, a node drained by hand with a reason, a node in a maintenance reservation:
    read end to end through the JSON forms (sinfo/squeue --json on 22.05) and the text forms."""
    cluster.run("scontrol", "update", "NodeName=n003", "State=DRAIN", "Reason=disk = 99% full [INC-7]")
    cluster.run(
        "scontrol", "create", "reservation", "ReservationName=sg_forms", "StartTime=now", "Duration=30",
        "Nodes=n004", f"Users={getpass.getuser()}", "Flags=MAINT",
    )  # fmt: skip
    try:
        cluster.wait_for("n004 in maintenance", lambda: "MAINTENANCE" in state_of(cluster.node_line("n004")))
        by_json, notices = read_snapshot(config, 1.0)
        assert notices == ()
        text_only = config.model_copy(update={"read_format": "text"})
        by_text, notices = read_snapshot(text_only, 1.0)
        assert notices == () and dict(by_text.forms) == {p: "text" for p in ("nodes", "jobs", "reservations")}
        want = json_forms(cluster)
        assert {part: form[: len(want[part])] for part, form in by_json.forms} == want
        # the dead node may turn NOT_RESPONDING between the two reads; the others are still
        live = [n for n in by_json.nodes if n.name not in cluster.dead_nodes]
        assert live == [n for n in by_text.nodes if n.name not in cluster.dead_nodes]
        assert [n.name for n in by_json.nodes] == [n.name for n in by_text.nodes]
        assert sorted(by_json.jobs, key=lambda j: j.job_id) == sorted(by_text.jobs, key=lambda j: j.job_id)
        assert by_json.reservations == by_text.reservations
        drained = by_json.node("n003")
        assert drained is not None and drained.drained and not drained.drained_by_seamguard
        assert (drained.reason, drained.reason_user) == ("disk = 99% full [INC-7]", getpass.getuser())
        assert drained.reason_time is not None and abs(drained.reason_time - time.time()) < 120
        maint = by_json.node("n004")
        assert maint is not None and maint.reserved and {"MAINTENANCE", "RESERVED"} <= maint.flags
        (resv,) = [r for r in by_json.reservations if r.name == "sg_forms"]
        assert resv.active and resv.maintenance and resv.nodes == ("n004",)
        (running,) = by_json.running_jobs()
        assert running.job_id == job and running.end is None and len(running.nodes) == 2
        for name in running.nodes:
            node = by_json.node(name)
            assert node is not None and node.base in ("MIXED", "ALLOCATED")
        # scontrol --json exists from 23.02 on; before, getopt refuses it (and the reader says nothing)
        asked = cluster.run("scontrol", "show", "node", "--json", check=False)
        if release(cluster)[:2] < (23, 2):
            assert asked.returncode == 1 and "unrecognized option '--json'" in asked.stderr
        else:
            assert asked.returncode == 0 and '"nodes"' in asked.stdout
    finally:
        cluster.run("scontrol", "delete", "ReservationName=sg_forms")
        cluster.run("scontrol", "update", "NodeName=n003", "State=RESUME")
    cluster.wait_for(
        "n004 out of maintenance", lambda: "MAINTENANCE" not in state_of(cluster.node_line("n004"))
    )


def test_source_emits_node_flags_and_counts_signals_missing_from_the_catalog(
    cluster: SlurmCluster, config: SlurmConfig
) -> None:
    names = list(cluster.nodes[:3])  # n004 and the dead node are not in this inventory
    topo = build_topology(inventory(names))
    cat = signal_catalog()
    cluster.run("scontrol", "update", f"NodeName={names[2]}", "State=DOWN", "Reason=test down")
    try:
        got = SlurmSource(topo, config, cat).collect(now=1000.0)
    finally:
        cluster.run("scontrol", "update", f"NodeName={names[2]}", "State=RESUME")
    assert len(got.batch) == len(names) * len(SLURM_SIGNALS)
    assert np.all(got.batch.timestamp == 1000.0)
    down = got.batch.signal == cat["node.slurm_down"].index
    by_node = dict(zip(got.batch.entity[down].tolist(), got.batch.value[down].tolist(), strict=True))
    assert by_node == {topo.lookup(f"node/{n}"): float(i == 2) for i, n in enumerate(names)}
    assert any("not in the inventory" in n.message and "n004" in n.message for n in got.notices)

    # a catalog without the Slurm flags (an older one): their samples are counted as unknown
    older = SignalCatalog(tuple(s for s in cat.signals if s.name not in SLURM_SIGNALS))
    plain = SlurmSource(topo, config, older).collect(now=1000.0)
    assert plain.unknown == dict.fromkeys(SLURM_SIGNALS, len(names))
    assert len(plain.batch) == 0


def test_drain_again_and_resume_a_node_of_the_running_job(
    cluster: SlurmCluster, job: str, config: SlurmConfig
) -> None:
    node = cluster.run("squeue", "-h", "-j", job, "-o", "%N").stdout.strip()
    node = expand_hostlist(node)[0]
    act: Actuator = SlurmActuator(config)  # the port's protocol, checked by mypy
    assert act.kinds == {
        "drain_node",
        "resume_node",
        "set_features",
        "restrict_admission",
        "restore_admission",
    }

    first = act.apply(action("drain_node", node, reason="gpu.temp_c 91 degC (peers 62)"), 10.0)
    assert first.status is ActionStatus.DONE, first.detail
    line = cluster.node_line(node)
    assert "Reason=seamguard: quarantine gpu.temp_c 91 degC (peers 62) [" in line
    assert parse_node_state(state_of(line)).flags >= {"DRAIN"}
    assert cluster.job_state(job) == "RUNNING"  # a drain lets the running job finish

    again = act.apply(action("drain_node", node, reason="something newer"), 11.0)
    assert again.status is ActionStatus.ALREADY, again.detail
    assert "gpu.temp_c 91 degC" in cluster.node_line(node)  # the first reason stands

    resumed = act.apply(action("resume_node", node, state="healthy"), 12.0)
    assert resumed.status is ActionStatus.DONE, resumed.detail
    assert "DRAIN" not in parse_node_state(state_of(cluster.node_line(node))).flags
    assert act.apply(action("resume_node", node, state="healthy"), 13.0).status is ActionStatus.ALREADY


def test_a_node_drained_by_hand_is_never_resumed(cluster: SlurmCluster, config: SlurmConfig) -> None:
    cluster.run("scontrol", "update", "NodeName=n003", "State=DRAIN", "Reason=hands off = really [ticket 42]")
    try:
        act = SlurmActuator(config)
        refused = act.apply(action("resume_node", "n003", state="healthy"), 1.0)
        assert refused.status is ActionStatus.REFUSED
        assert "someone else" in refused.detail and "hands off" in refused.detail
        drained = act.apply(action("drain_node", "n003"), 2.0)
        assert drained.status is ActionStatus.ALREADY
        node = parse_node_line(cluster.node_line("n003"))
        assert node is not None and node.drained
        assert node.reason == "hands off = really [ticket 42]"  # real text: spaces, '=' and brackets
        assert node.reason_user == getpass.getuser()
        assert node.reason_time is not None and abs(node.reason_time - time.time()) < 120
        assert not node.drained_by_seamguard
    finally:
        cluster.run("scontrol", "update", "NodeName=n003", "State=RESUME")


def test_a_node_in_a_maintenance_reservation_is_not_touched(
    cluster: SlurmCluster, config: SlurmConfig
) -> None:
    cluster.run(
        "scontrol", "create", "reservation", "ReservationName=sg_maint", "StartTime=now", "Duration=30",
        "Nodes=n004", f"Users={getpass.getuser()}", "Flags=MAINT",
    )  # fmt: skip
    act = SlurmActuator(config)
    try:
        # At once: found through the reservation, before slurmctld sets the node's flags.
        res = act.apply(action("drain_node", "n004"), 1.0)
        assert res.status is ActionStatus.REFUSED and "sg_maint" in res.detail
        cluster.wait_for(
            "n004 to show MAINTENANCE", lambda: "MAINTENANCE" in state_of(cluster.node_line("n004"))
        )
        node = parse_node_line(cluster.node_line("n004"))
        assert node is not None and node.reserved and {"MAINTENANCE", "RESERVED"} <= node.flags
        for kind in ("drain_node", "resume_node", "set_features"):
            res = act.apply(action(kind, "n004", add="sg_degraded"), 2.0)
            assert res.status is ActionStatus.REFUSED and "maintenance" in res.detail, (kind, res.detail)
        assert parse_node_line(cluster.node_line("n004")) == node  # untouched
    finally:
        cluster.run("scontrol", "delete", "ReservationName=sg_maint")
    cluster.wait_for(
        "n004 to leave maintenance", lambda: "MAINTENANCE" not in state_of(cluster.node_line("n004"))
    )
    assert act.apply(action("drain_node", "n004"), 3.0).status is ActionStatus.DONE
    assert act.apply(action("resume_node", "n004", state="healthy"), 4.0).status is ActionStatus.DONE


def test_features_are_added_and_removed_keeping_the_others(
    cluster: SlurmCluster, config: SlurmConfig
) -> None:
    act = SlurmActuator(config)

    def features() -> tuple[tuple[str, ...], tuple[str, ...]]:
        node = parse_node_line(cluster.node_line("n002"))
        assert node is not None
        return node.features, node.active_features

    res = act.apply(action("set_features", "n002", state="degraded", add="sg_degraded"), 1.0)
    assert res.status is ActionStatus.DONE, res.detail
    assert features() == (("gpu", "h100", "sg_degraded"), ("gpu", "h100", "sg_degraded"))
    assert act.apply(action("set_features", "n002", add="sg_degraded"), 2.0).status is ActionStatus.ALREADY
    out = cluster.run("sinfo", "-h", "-N", "-o", "%N %f").stdout
    assert "n002 gpu,h100,sg_degraded" in out
    # The scheduler places on it: a job constrained to the feature lands on n002 only.
    probe = cluster.submit(1, "sg-probe", 60, "--constraint=sg_degraded")
    try:
        cluster.wait_for(f"job {probe} to run", lambda: cluster.job_state(probe) == "RUNNING")
        assert cluster.run("squeue", "-h", "-j", probe, "-o", "%N").stdout.strip() == "n002"
    finally:
        cluster.run("scancel", probe)

    res = act.apply(action("set_features", "n002", state="healthy", features=""), 3.0)  # clear seamguard's
    assert res.status is ActionStatus.DONE, res.detail
    assert features() == (("gpu", "h100"), ("gpu", "h100"))
    res = act.apply(action("set_features", "n002", remove="sg_degraded"), 4.0)
    assert res.status is ActionStatus.ALREADY


def test_degraded_admission_is_the_sg_degraded_feature(cluster: SlurmCluster, config: SlurmConfig) -> None:
    """The planner's restrict_admission on a degraded GPU marks its node; restore_admission unmarks it."""
    act = SlurmActuator(config)
    gpu = Action("restrict_admission", "gpu/n004/3", "gpu.temp_c 88 degC", "degraded", 1.0e9)
    res = act.apply(gpu, 1.0)
    assert res.status is ActionStatus.DONE and res.action.kind == "restrict_admission", res.detail
    node = parse_node_line(cluster.node_line("n004"))
    assert node is not None and "sg_degraded" in node.features and "gpu" in node.features
    back = Action("restore_admission", "gpu/n004/3", "recovered", "healthy", 1.0e9 + 60)
    assert act.apply(back, 2.0).status is ActionStatus.DONE
    node = parse_node_line(cluster.node_line("n004"))
    assert node is not None and "sg_degraded" not in node.features and "gpu" in node.features
    rack = Action("restrict_admission", "rack/r01", "inlet 35 degC", "degraded", 1.0e9)
    res = act.apply(rack, 3.0)
    assert res.status is ActionStatus.SKIPPED and "not a node" in res.detail


def test_failing_commands_are_failed_results_and_notices(cluster: SlurmCluster, config: SlurmConfig) -> None:
    act = SlurmActuator(config)
    res = act.apply(action("drain_node", "nope"), 1.0)
    assert res.status is ActionStatus.FAILED and "Node nope not found" in res.detail

    broken = cluster.root / "broken.conf"
    broken.write_text("this is = not slurm\n")
    bad = config.model_copy(update={"slurm_conf": str(broken)})
    res = SlurmActuator(bad).apply(action("drain_node", "n001"), 2.0)
    assert res.status is ActionStatus.FAILED and "Parse error" in res.detail and "broken.conf" in res.detail
    source = SlurmSource(build_topology(inventory(list(cluster.nodes))), bad)
    got = source.collect(now=3.0)
    assert len(got.batch) == 0 and source.placements() is None
    wheres = [n.where for n in got.notices]
    assert any(w.endswith("show node --oneliner") for w in wheres) and any("squeue" in w for w in wheres)
    assert all("Parse error" in n.message for n in got.notices)

    # Garbage from a real Slurm client: sinfo given squeue's format string.
    odd = config.model_copy(update={"squeue": cluster.bins["sinfo"]})
    snap, notices = read_snapshot(odd, now=3.0)
    assert snap.jobs == () and len(snap.nodes) == len(cluster.nodes) + len(cluster.dead_nodes)
    assert notices and all("sinfo" in n.where for n in notices)
    # Its --json prints nodes, not jobs: noticed once, and the text form is read instead.
    (json_fail,) = [n for n in notices if "--json" in n.where]
    assert "no 'jobs' list" in json_fail.message and "read with" in json_fail.message
    assert all("not a job id" in n.message for n in notices if n is not json_fail)

    # A controller that does not answer: the command is cut at the timeout.
    away = cluster.root / "away.conf"
    away.write_text("ClusterName=away\nSlurmctldHost=localhost\nSlurmctldPort=1\n")
    slow = config.model_copy(update={"slurm_conf": str(away), "timeout_s": 1.0})
    res = SlurmActuator(slow).apply(action("resume_node", "n001"), 4.0)
    assert res.status is ActionStatus.FAILED and "timed out after 1s" in res.detail
    assert "DRAIN" not in state_of(cluster.node_line("n001"))


def test_a_node_without_slurmd_is_seen_not_responding(cluster: SlurmCluster, config: SlurmConfig) -> None:
    """Last: slurmctld marks the never-started node after SlurmdTimeout (10 s)."""
    (dead,) = cluster.dead_nodes
    cluster.wait_for(
        f"{dead} to be not responding",
        lambda: "NOT_RESPONDING" in state_of(cluster.node_line(dead)),
        timeout=40,
    )
    line = cluster.node_line(dead)
    node = parse_node_line(line)
    assert node is not None and node.not_responding and node.name == dead
    topo = build_topology(inventory([dead]))
    cat = signal_catalog()
    got = SlurmSource(topo, config, cat).collect(now=5.0)
    nr = got.batch.signal == cat["node.slurm_not_responding"].index
    assert got.batch.value[nr].tolist() == [1.0]
    assert REASON_PREFIX not in line
