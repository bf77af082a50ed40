"""The XID catalog: NVIDIA's codes and resolutions as data, validated at load, and what the engine
does with them (evidence, least state, the operator's action in reasons and drain reasons)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from seamguard.actuators.slurm import drain_reason
from seamguard.config import load_config
from seamguard.control.controller import Controller
from seamguard.control.safety import action_of
from seamguard.diagnose.explain import explain
from seamguard.journal.sqlite import SqliteJournal
from seamguard.model.catalog import signal_catalog
from seamguard.model.states import State
from seamguard.model.topology import Topology
from seamguard.model.xid import (
    NVIDIA_BUCKETS,
    RESOLUTION_POLICY,
    XidCatalogError,
    XidResolution,
    XidSeverity,
    describe_xid,
    packaged_xid_catalog,
    parse_xid_catalog,
    unknown_xid_notice_text,
    xid_catalog,
    xid_markdown_table,
)
from seamguard.scoring.events import UNKNOWN_XID_EVIDENCE, XidMemory
from seamguard.telemetry.batch import TelemetryBatch
from seamguard.telemetry.store import TickEvents
from tests.test_controller import normal_batch, run

ROOT = Path(__file__).resolve().parents[1]
CAT = signal_catalog()
CFG = load_config()
R = XidResolution

# The codes whose immediate action in NVIDIA's catalog (Xid-Catalog.xlsx, October 2025) is a
# hardware one: RESET_GPU (14 codes), RESTART_BM (79), CHECK_MECHANICALS (54), and the workflows
# that end in a reset: WORKFLOW_XID_48 (48), WORKFLOW_NVLINK_ERR (74), WORKFLOW_NVLINK5_ERR
# (144-150), CHECK_UVM (159) and XID_154 (154). 27 in all.
NVIDIA_HARDWARE = {
    46: "RESET_GPU", 48: "WORKFLOW_XID_48", 54: "CHECK_MECHANICALS", 62: "RESET_GPU", 64: "RESET_GPU",
    74: "WORKFLOW_NVLINK_ERR", 79: "RESTART_BM", 95: "RESET_GPU", 109: "RESET_GPU", 110: "RESET_GPU",
    119: "RESET_GPU", 120: "RESET_GPU", 136: "RESET_GPU", 140: "RESET_GPU", 143: "RESET_GPU",
    144: "WORKFLOW_NVLINK5_ERR", 145: "WORKFLOW_NVLINK5_ERR", 146: "WORKFLOW_NVLINK5_ERR",
    147: "WORKFLOW_NVLINK5_ERR", 148: "WORKFLOW_NVLINK5_ERR", 149: "WORKFLOW_NVLINK5_ERR",
    150: "WORKFLOW_NVLINK5_ERR", 154: "XID_154", 155: "RESET_GPU", 156: "RESET_GPU", 158: "RESET_GPU",
    159: "CHECK_UVM",
}  # fmt: skip
# NVIDIA's 144-150 decode sheet sends every sub-code of these two to IGNORE (non-fatal).
DECODED_TO_IGNORE = {147, 148}


# ---- the catalog as data ------------------------------------------------------------------------


def test_catalog_is_nvidias_whole_catalog_with_a_resolution_for_every_code() -> None:
    cat = xid_catalog()
    assert len(cat) >= 150
    assert set(range(1, 173)) <= set(cat)
    assert packaged_xid_catalog().version
    for code, x in cat.items():
        assert x.code == code and x.name and x.mnemonic and x.action
        assert x.resolution in R
        assert x.nvidia is None or x.nvidia in NVIDIA_BUCKETS
        # a row follows its bucket, or says why not
        assert x.why or (x.nvidia is not None and NVIDIA_BUCKETS[x.nvidia] is x.resolution)
        # severity, evidence, state, action come from the resolution unless the row says why
        p = RESOLUTION_POLICY[x.resolution]
        if (x.severity, x.evidence, x.state, x.action) != (p.severity, p.evidence, p.state, p.action):
            assert x.why, code
    assert len(NVIDIA_HARDWARE) == 27


def test_nvidias_hardware_codes_are_all_present_with_a_hardware_action() -> None:
    cat = xid_catalog()
    for code, bucket in NVIDIA_HARDWARE.items():
        x = cat[code]
        assert x.nvidia == bucket, code
        if code in DECODED_TO_IGNORE:
            assert x.resolution is R.IGNORE and x.state is None and x.why
        elif code == 159:
            assert x.resolution is R.CHECK_UVM and x.evidence > 0  # reset only if UVM/vGPU is in use
        else:
            assert x.forces_hardware_action, code
            assert x.severity in (XidSeverity.CRITICAL, XidSeverity.FATAL), code
            assert x.evidence >= 0.7, code


@pytest.mark.parametrize("code", [46, 109, 110, 119, 120, 136, 143, 144, 145, 146, 149, 150, 155, 156, 158])
def test_reset_gpu_codes_quarantine_and_say_reset_the_gpu(code: int) -> None:
    x = xid_catalog()[code]
    assert x.resolution is R.RESET_GPU
    assert x.state is State.QUARANTINE and x.severity is XidSeverity.CRITICAL
    assert "reset the GPU" in x.action


def test_specific_codes_follow_nvidias_resolution() -> None:
    cat = xid_catalog()
    # 48 double-bit ECC: NVIDIA's workflow resets the GPU; seamguard keeps it hard (failed)
    assert cat[48].nvidia == "WORKFLOW_XID_48" and cat[48].resolution is R.RESET_GPU
    assert cat[48].state is State.FAILED and cat[48].evidence == 1.0 and cat[48].why
    # 79 fallen off the bus: reboot the node
    assert cat[79].resolution is R.REBOOT_NODE and cat[79].state is State.FAILED
    assert "reboot the node" in cat[79].action
    # 94 contained memory error: restart the application, no node action
    assert cat[94].nvidia == "RESTART_APP" and cat[94].resolution is R.RESTART_APP
    assert cat[94].state is None and cat[94].evidence == 0.0 and cat[94].severity is XidSeverity.INFO
    # 95 uncontained: reset the GPU (held failed: its memory cannot be trusted until then)
    assert cat[95].resolution is R.RESET_GPU and cat[95].state is State.FAILED and cat[95].why
    # 109 context-switch timeout and 143 init error: reset the GPU (109 was a mere warning before)
    assert cat[109].resolution is R.RESET_GPU and cat[109].state is State.QUARANTINE
    assert cat[143].resolution is R.RESET_GPU and cat[143].state is State.QUARANTINE
    # 63 remap recorded: NVIDIA ignores it; weak evidence, nothing forced. 64 remap failed: RMA
    assert cat[63].resolution is R.IGNORE and cat[63].state is None and 0 < cat[63].evidence < 0.35
    assert cat[64].resolution is R.RMA and cat[64].state is State.FAILED and "RMA" in cat[64].action
    # 74 NVLink error: NVIDIA's workflow, a GPU reset
    assert cat[74].nvidia == "WORKFLOW_NVLINK_ERR" and cat[74].resolution is R.RESET_GPU
    # 119 GSP RPC timeout: reset the GPU
    assert cat[119].resolution is R.RESET_GPU and cat[119].state is State.QUARANTINE
    # 154 recovery action changed: quarantine, the operator reads the driver's message
    assert cat[154].nvidia == "XID_154" and cat[154].state is State.QUARANTINE and "154" in cat[154].action
    # 46 GPU timeout, 110 security fault, 136 link training, 155/156/158: reset the GPU
    for code in (46, 110, 136, 155, 156, 158):
        assert cat[code].resolution is R.RESET_GPU, code
    # 54 auxiliary power not connected: hands-on
    assert cat[54].resolution is R.CHECK_MECHANICALS and cat[54].state is State.QUARANTINE
    # 144-150 NVLink5: decoded by NVIDIA's sheet; 147/148 never need more than IGNORE
    assert [cat[c].resolution for c in range(144, 151)] == [R.RESET_GPU] * 3 + [R.IGNORE] * 2 + [
        R.RESET_GPU
    ] * 2
    # 160 channel retirement: NVIDIA says ignore; 162 power smoothing re-engaged: no bucket, informational
    assert cat[160].nvidia == "IGNORE" and cat[160].resolution is R.IGNORE and cat[160].state is None
    assert cat[162].nvidia is None and cat[162].resolution is R.IGNORE and cat[162].why
    # application faults
    for code in (13, 31, 43, 45):
        assert cat[code].state is None and cat[code].evidence == 0.0, code


def test_describe_names_code_meaning_nvidia_resolution_and_action() -> None:
    text = describe_xid(119)
    assert text.startswith("XID 119 (") and "GSP RPC timeout" in text
    assert "NVIDIA RESET_GPU" in text and text.endswith("drain the node and reset the GPU")
    assert describe_xid(79, ", 5 min ago").startswith("XID 79, 5 min ago (GPU has fallen off the bus")


def test_unknown_code_uses_the_documented_default() -> None:
    assert xid_catalog().get(999) is None
    assert UNKNOWN_XID_EVIDENCE == 0.3
    text = describe_xid(999)
    assert text.startswith("XID 999 (not in NVIDIA's Xid catalog") and "October 2025" in text
    assert "release notes" in text
    notice = unknown_xid_notice_text(999)
    assert "XID 999 is not in NVIDIA's Xid catalog" in notice and "no state forced" in notice
    mem = XidMemory.create(2, CFG.detectors.xid)
    ev, floor = mem.update(CAT["gpu.xid"], 30.0, TickEvents(np.array([0]), np.array([999]), np.array([1.0])))
    assert floor.tolist() == [-1, -1]
    assert ev.evidence[0] == pytest.approx(0.3)
    assert "not in NVIDIA's Xid catalog" in ev.describe(0)


def test_docs_table_is_generated_from_the_yaml() -> None:
    doc = (ROOT / "docs" / "signals.md").read_text()
    begin = doc.index("<!-- xid-table:begin")
    body = doc[doc.index("\n", begin) + 1 : doc.index("<!-- xid-table:end -->")]
    assert body.strip() == xid_markdown_table().strip(), "run: python scripts/xid_table.py --write"


# ---- validation at load -------------------------------------------------------------------------


def _rows(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"version": "test", "xids": list(rows)}


def _row(code: int = 13, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "code": code, "mnemonic": "X", "name": "x", "nvidia": "RESTART_APP", "resolution": "restart_app"
    }  # fmt: skip
    row.update(kw)
    return {k: v for k, v in row.items() if v is not ...}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            _rows(_row(resolution="reboot")),
            r"XID 13: key 'resolution': 'reboot' is not one of ignore, restart_app",
        ),
        (_rows(_row(13), _row(31), _row(13)), r"XID 13: key 'code': duplicate \(rows 1 and 3\)"),
        (_rows(_row(name=...)), r"XID 13: key 'name': missing"),
        (_rows(_row(name=" ")), r"XID 13: key 'name': expected a non-empty string"),
        (_rows(_row(nvidia="REBOOT")), r"XID 13: key 'nvidia': 'REBOOT' is not an NVIDIA bucket"),
        (
            _rows(_row(resolution="reset_gpu")),
            r"XID 13: key 'resolution': departs from NVIDIA's RESTART_APP: say why",
        ),
        (_rows(_row(nvidia=None)), r"XID 13: key 'resolution': has no NVIDIA bucket: say why"),
        (_rows(_row(evidence=0.5)), r"XID 13: key 'evidence': overrides the resolution's policy: say why"),
        (_rows(_row(evidence=2, why="w")), r"XID 13: key 'evidence': expected a number in \[0, 1\]"),
        (_rows(_row(state="broken", why="w")), r"XID 13: key 'state': unknown state 'broken'"),
        (_rows(_row(severity="grave", why="w")), r"XID 13: key 'severity': 'grave' is not one of info"),
        (_rows(_row(colour="red")), r"XID 13: key 'colour': unknown key"),
        (_rows({"name": "x"}), r"row 1: key 'code': expected a non-negative integer"),
        ({"xids": [_row()]}, r"'version' must name"),
    ],
)
def test_a_bad_catalog_fails_at_load_naming_code_and_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(XidCatalogError, match=message):
        parse_xid_catalog(data, "xid.yaml")


def test_overrides_with_a_reason_load() -> None:
    cat = parse_xid_catalog(_rows(_row(resolution="reset_gpu", state=None, evidence=0.5, why="because")))
    x = cat.xids[13]
    assert x.resolution is R.RESET_GPU and x.state is None and x.evidence == 0.5
    assert x.severity is XidSeverity.CRITICAL and x.action == RESOLUTION_POLICY[R.RESET_GPU].action


def test_the_packaged_yaml_round_trips_through_the_validator() -> None:
    text = (ROOT / "src" / "seamguard" / "data" / "xid.yaml").read_text()
    assert parse_xid_catalog(yaml.safe_load(text)).xids == packaged_xid_catalog().xids


# ---- engine behaviour ---------------------------------------------------------------------------


def _xid(topology: Topology, now: float, gpu: str, code: int) -> TelemetryBatch:
    return TelemetryBatch(
        np.array([topology.index[gpu]]),
        np.array([CAT["gpu.xid"].index]),
        np.array([now - 3]),
        np.array([float(code)]),
    )


def _after_xid(topology: Topology, code: int, **kw: Any) -> tuple[Controller, Any, float]:
    ctl, _ = run(topology, 5, **kw)
    now = 1000.0 + 30 * 6
    b = normal_batch(topology, now, np.random.default_rng(1))
    return ctl, ctl.tick(now, TelemetryBatch.concat([b, _xid(topology, now, "gpu/n01/2", code)])), now


def test_the_state_floor_follows_the_resolution() -> None:
    """Restart-app forces nothing, reset-GPU quarantine, RMA and reboot failed, unknown nothing."""
    codes = np.array([94, 143, 64, 79, 999])
    mem = XidMemory.create(codes.size, CFG.detectors.xid)
    ev, floor = mem.update(
        CAT["gpu.xid"], 30.0, TickEvents(np.arange(codes.size), codes, np.ones(codes.size))
    )
    assert floor.tolist() == [-1, int(State.QUARANTINE), int(State.FAILED), int(State.FAILED), -1]
    assert ev.evidence.tolist() == pytest.approx([0.0, 0.8, 1.0, 1.0, 0.3])


def test_restart_app_xid_leaves_gpu_and_node_in_service(topology: Topology) -> None:
    ctl, res, _ = _after_xid(topology, 94)
    gidx = topology.index["gpu/n01/2"]
    assert ctl.states[gidx] == State.HEALTHY
    assert ctl.states[topology.index["node/n01"]] == State.HEALTHY
    assert not [t for t in res.transitions if t.entity in ("gpu/n01/2", "node/n01")]
    assert not [d for d in res.decisions if d.entity == "node/n01"]
    assert float(ctl.gfs[gidx]) < 0.01


def test_reset_gpu_xid_quarantines_and_the_drain_reason_says_reset_the_gpu(topology: Topology) -> None:
    ctl, res, _ = _after_xid(topology, 143)
    assert ctl.states[topology.index["gpu/n01/2"]] == State.QUARANTINE
    [t] = [t for t in res.transitions if t.entity == "gpu/n01/2"]
    assert t.to_state == "quarantine" and "XID 143" in t.reason and "NVIDIA RESET_GPU" in t.reason
    [drain] = [d for d in res.decisions if d.entity == "node/n01" and d.action == "drain_node"]
    reason = drain_reason(action_of(drain), 250)
    assert reason.startswith("seamguard: quarantine gpu/n01/2: XID 143 (GPU initialization error")
    assert reason.endswith("drain the node and reset the GPU")


def test_rma_xid_fails_the_gpu_and_says_rma(topology: Topology) -> None:
    ctl, res, _ = _after_xid(topology, 64)
    assert ctl.states[topology.index["gpu/n01/2"]] == State.FAILED
    [t] = [t for t in res.transitions if t.entity == "gpu/n01/2"]
    assert t.to_state == "failed" and "RMA the GPU" in t.reason
    assert {d.action for d in res.decisions if d.entity == "node/n01"} >= {"drain_node"}


def test_unknown_xid_forces_nothing_and_is_explained_as_unknown(topology: Topology) -> None:
    ctl, _, _ = _after_xid(topology, 999)
    gidx = topology.index["gpu/n01/2"]
    assert ctl.states[gidx] == State.HEALTHY  # 0.3 is below degraded_enter: weak evidence only
    assert float(ctl.gfs[gidx]) == pytest.approx(0.3)
    view = ctl.view("gpu/n01/2")
    assert any("not in NVIDIA's Xid catalog" in e.text for e in view.evidence)


def test_explain_names_the_xid_and_its_resolution(topology: Topology, tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite")
    ctl = Controller(topology, CFG, journal=journal)
    rng = np.random.default_rng(0)
    for i in range(6):
        now = 1000.0 + 30.0 * (i + 1)
        batch = normal_batch(topology, now, rng)
        if i == 5:
            batch = TelemetryBatch.concat([batch, _xid(topology, now, "gpu/n01/2", 79)])
        ctl.tick(now, batch)
    ex = explain(journal, CFG, "gpu/n01/2")
    assert ex.state is State.FAILED
    texts = [e.text for e in ex.evidence]
    assert any(
        "XID 79 (GPU has fallen off the bus; NVIDIA RESTART_BM): drain and reboot the node" in t
        for t in texts
    )
    drains = [d for d in journal.decisions(entity="node/n01") if d.action == "drain_node"]
    assert drains and "reboot the node" in drains[0].reason
    journal.close()


# ---- the states the docs promise, through the engine ---------------------------------------------

# docs/signals.md and docs/states.md promise these; meaning and bucket as NVIDIA's Xid catalog
# (October 2025) gives them: 94/95 contained/uncontained memory error (RESTART_APP / RESET_GPU, the
# uncontained one affecting every application on the GPU), 48 double-bit ECC, 140 unrecovered ECC,
# 79 fallen off the bus (RESTART_BM), 63/64 row remap recorded/failed, 119/120 GSP timeout/error.
PROMISED = [
    (48, "ROBUST_CHANNEL_GPU_ECC_DBE", "WORKFLOW_XID_48", State.FAILED),
    (63, "INFOROM_DRAM_RETIREMENT_EVENT", "IGNORE", None),
    (64, "INFOROM_DRAM_RETIREMENT_FAILURE", "RESET_GPU", State.FAILED),
    (79, "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "RESTART_BM", State.FAILED),
    (94, "ROBUST_CHANNEL_CONTAINED_ERROR", "RESTART_APP", None),
    (95, "ROBUST_CHANNEL_UNCONTAINED_ERROR", "RESET_GPU", State.FAILED),
    (119, "GSP_RPC_TIMEOUT", "RESET_GPU", State.QUARANTINE),
    (120, "GSP_ERROR", "RESET_GPU", State.QUARANTINE),
    (140, "UNRECOVERABLE_ECC_ERROR_ESCAPE", "RESET_GPU", State.FAILED),
]


@pytest.mark.parametrize(("code", "mnemonic", "bucket", "state"), PROMISED)
def test_the_documented_xids_force_the_documented_state(
    code: int, mnemonic: str, bucket: str, state: State | None
) -> None:
    """A weakened (or hardened) row fails here: the state floor the engine applies is the promised one."""
    x = xid_catalog()[code]
    assert (x.mnemonic, x.nvidia) == (mnemonic, bucket)  # the row is the code NVIDIA means
    mem = XidMemory.create(1, CFG.detectors.xid)
    _, floor = mem.update(CAT["gpu.xid"], 30.0, TickEvents(np.array([0]), np.array([code]), np.array([1.0])))
    assert floor.tolist() == [-1 if state is None else int(state)]


def test_an_uncontained_memory_error_fails_the_gpu_and_holds_its_node_out(topology: Topology) -> None:
    """XID 95 through a Controller tick: failed at once, its node drained and the GPU reset; clean
    telemetry after it releases nothing before failed_hold_s (a quarantine would be released in
    about 30 minutes), and then only to degraded."""
    ctl, res, now = _after_xid(topology, 95)
    gidx = topology.index["gpu/n01/2"]
    assert ctl.states[gidx] == State.FAILED
    [t] = [t for t in res.transitions if t.entity == "gpu/n01/2"]
    assert t.to_state == "failed" and "XID 95 (uncontained memory error; NVIDIA RESET_GPU)" in t.reason
    node = [d.action for d in res.decisions if d.entity == "node/n01"]
    assert sorted(node) == ["drain_node", "reset_gpu"]
    rng = np.random.default_rng(2)
    hold = CFG.classifier.failed_hold_s
    later = []
    for t_s in np.arange(now + 300.0, now + hold, 300.0):
        later.extend(ctl.tick(float(t_s), normal_batch(topology, float(t_s), rng)).decisions)
        assert ctl.states[gidx] == State.FAILED, t_s - now
    assert not [d for d in later if d.entity in ("node/n01", "gpu/n01/2")]  # nothing resumed or restored
    ctl.tick(now + hold + 300.0, normal_batch(topology, now + hold + 300.0, rng))
    assert ctl.states[gidx] == State.DEGRADED  # probation, never straight to healthy
