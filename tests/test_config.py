from __future__ import annotations

from pathlib import Path

import pytest

from seamguard.config import config_from_mapping, load_config
from seamguard.errors import InputError
from seamguard.model.catalog import signal_catalog
from seamguard.model.states import Admission, JobClass, State
from seamguard.model.xid import xid_catalog

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_load_and_are_complete() -> None:
    cfg = load_config()
    assert cfg.admission(State.QUARANTINE, JobClass.SYNC_TRAINING) is Admission.DENY
    assert cfg.admission(State.HEALTHY, JobClass.ONLINE_DECODE) is Admission.ADMIT
    assert cfg.admission(State.RECOVERY_UNSAFE, JobClass.CHECKPOINT_PATH) is Admission.DENY


def test_user_file_merges_and_null_removes(tmp_path: Path) -> None:
    f = tmp_path / "site.yaml"
    f.write_text(
        "classifier:\n  min_dwell_s: 60\ndetectors:\n  trend:\n    gpu.temp_c: null\n"
        "hazard:\n  thermal_trip: null\n"  # it reads that rule: without it, no trip is projected
    )
    cfg = load_config(f)
    assert cfg.classifier.min_dwell_s == 60
    assert cfg.classifier.degraded_enter == load_config().classifier.degraded_enter
    assert "gpu.temp_c" not in cfg.detectors.trend


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("classifier:\n  degraded_enter: 2\n", "classifier.degraded_enter"),
        ("classifier:\n  degraded_exit: 0.5\n", "degraded_exit must be below degraded_enter"),
        (
            "detectors:\n  level:\n    gpu.fan_rpm: {warn: 1, crit: 2, weight: 0.5}\n",
            "unknown signal 'gpu.fan_rpm'",
        ),
        (
            "detectors:\n  counter:\n    gpu.temp_c: {warn: 1, crit: 2, weight: 0.5}\n",
            "is a gauge, expected counter",
        ),
        (
            "detectors:\n  level:\n    gpu.temp_c: {warn: 90, crit: 80, weight: 0.5}\n",
            "crit (80.0) above warn",
        ),
        (
            "detectors:\n  usual:\n    cdu.flow_lpm: {warn: 0.1, crit: 1.5, weight: 0.5}\n",
            "detectors.usual.cdu.flow_lpm: Value error, usual warn must be a positive share, and crit below 1",
        ),
        (
            "detectors:\n  usual:\n    gpu.xid: {warn: 0.1, crit: 0.5, weight: 0.5}\n",
            "usual.gpu.xid: signal 'gpu.xid' is an event, expected gauge",
        ),
        ("admissibility:\n  healthy: {sync_training: maybe}\n", "admissibility.healthy.sync_training"),
        ("enigne:\n  tick_s: 5\n", "enigne"),
        (
            "detectors:\n  trend:\n    gpu.temp_c: null\n",
            "hazard.thermal_trip.signal: no trend rule scores 'gpu.temp_c'",
        ),
        ("hazard:\n  thermal_trip: {signal: cdu.supply_temp_c}\n", "'cdu.supply_temp_c' is not a GPU signal"),
        ("hazard:\n  thermal_trip: {margin_c: 0}\n", "hazard.thermal_trip.margin_c"),
        (
            "hazard:\n  thermal_trip: {act_within_s: 7200}\n",
            "hazard.thermal_trip: Value error, act_within_s (7200) must not exceed within_s (3600)",
        ),
        ("economics:\n  repair_s: 0\n", "economics.repair_s"),
        ("classifier: [\n", ":2:1: not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_bad_config_names_file_key_and_expectation(tmp_path: Path, text: str, expect: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(InputError) as err:
        load_config(f)
    assert str(f) in str(err.value)
    assert expect in str(err.value)


def test_missing_config_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_in_memory_override() -> None:
    assert config_from_mapping({"engine": {"tick_s": 10}}).engine.tick_s == 10


def test_docs_embed_the_defaults_verbatim() -> None:
    doc = (ROOT / "docs" / "config.md").read_text()
    defaults = (ROOT / "src" / "seamguard" / "data" / "defaults.yaml").read_text()
    assert defaults.strip() in doc


def test_docs_list_every_signal_and_xid() -> None:
    doc = (ROOT / "docs" / "signals.md").read_text()
    for sig in signal_catalog().signals:
        assert f"`{sig.name}`" in doc
    for code in xid_catalog():
        assert f"| {code} |" in doc
    for code in (48, 63, 64, 74, 79, 92, 94, 95, 154):
        assert code in xid_catalog()
