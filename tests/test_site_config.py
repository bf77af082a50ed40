"""The daemon's config: one user file, the engine's sections validated by ``seamguard.config``
and the site's by ``seamguard.site_config``; a key neither knows is refused, named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seamguard.config import SITE_SECTIONS, load_config
from seamguard.control.safety_config import SafetyConfig, safety_from_mapping
from seamguard.errors import InputError
from seamguard.site_config import SiteConfig, daemon_config_from_mapping, load_daemon_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_engine_leaves_exactly_the_site_sections_to_the_daemon() -> None:
    assert set(SiteConfig.model_fields) == SITE_SECTIONS


def test_one_file_gives_the_engine_its_sections_and_the_daemon_the_site(tmp_path: Path) -> None:
    f = tmp_path / "site.yaml"
    f.write_text("classifier:\n  min_dwell_s: 60\nsafety:\n  budgets: {max_nodes: 3}\nsources:\n  push: {}\n")
    daemon = load_daemon_config(f)
    assert daemon.policy.classifier.min_dwell_s == 60 and daemon.policy == load_config(f)
    assert daemon.site.safety.budgets.max_nodes == 3 and daemon.site.sources.push is not None
    assert not hasattr(load_config(f), "sources")  # the engine's config carries none of the site


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("sources:\n  push: {capacity_rows: 0}\n", "key sources.push.capacity_rows"),
        ("sources:\n  dcgn: {}\n", "key sources.dcgn: Extra inputs are not permitted"),
        ("safety:\n  budgets: {max_nodez: 1}\n", "key safety.budgets.max_nodez"),
        ("service:\n  tls: 7\n", "key service.tls"),
        ("actuators:\n  slurm: {mode: yes_please}\n", "key actuators.slurm.mode"),
        ("sourcez:\n  push: {}\n", "key sourcez: Extra inputs are not permitted"),
    ],
)
def test_a_bad_site_key_is_refused_naming_file_and_path(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(InputError) as err:
        load_daemon_config(f)
    assert str(f) in str(err.value) and key in str(err.value)


def test_the_twin_builds_the_safety_section_from_the_same_defaults() -> None:
    assert safety_from_mapping() == daemon_config_from_mapping({}).site.safety
    tight = safety_from_mapping({"budgets": {"max_nodes": 2}, "storm": {"max_domains": 1}})
    assert isinstance(tight, SafetyConfig)
    assert tight.budgets.max_nodes == 2 and tight.storm.max_domains == 1
    assert tight.recovery == safety_from_mapping().recovery  # what was not overridden stays default
    with pytest.raises(InputError, match=r"safety: key budgets\.max_nodes"):
        safety_from_mapping({"budgets": {"max_nodes": -1}})


def test_a_digest_changes_with_either_half() -> None:
    base = daemon_config_from_mapping({})
    assert base.sha256() == daemon_config_from_mapping({}).sha256()
    assert daemon_config_from_mapping({"classifier": {"min_dwell_s": 61}}).sha256() != base.sha256()
    assert daemon_config_from_mapping({"safety": {"budgets": {"max_nodes": 3}}}).sha256() != base.sha256()


def test_the_example_site_config_loads_builds_its_sources_and_needs_its_webhook_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """examples/site.yaml, the operator's starting point for `seamguard run`, stays valid."""
    from seamguard.actuators.dispatch import build_routes
    from seamguard.actuators.sections import Mode
    from seamguard.model.topology import build_topology
    from seamguard.telemetry.sources.build import build_sources
    from seamguard.twin.cluster import ClusterSpec, generate_cluster

    cfg = load_daemon_config(ROOT / "examples" / "site.yaml")
    assert cfg.policy.engine.tick_s == 10 and cfg.site.safety.budgets.max_nodes == 4
    assert cfg.site.safety.budgets.max_fleet_pct == 5.0  # a default kept beside the override
    topo = build_topology(generate_cluster(ClusterSpec(cdus=1, racks_per_cdu=1, nodes_per_rack=4)), ())
    sources = build_sources(cfg.site.sources, topo)
    try:
        assert [s.name for s in sources] == ["dcgm", "modbus", "slurm", "push"]
    finally:
        for s in sources:
            close = getattr(s, "close", None)
            if callable(close):
                close()
    monkeypatch.delenv("SEAMGUARD_WEBHOOK_SECRET", raising=False)
    with pytest.raises(InputError, match="SEAMGUARD_WEBHOOK_SECRET"):
        build_routes(cfg.site.actuators)
    monkeypatch.setenv("SEAMGUARD_WEBHOOK_SECRET", "s3cret")
    routes = build_routes(cfg.site.actuators)
    assert {r.actuator.name: r.mode for r in routes} == {"webhook": Mode.ADVISE, "slurm": Mode.ADVISE}


@pytest.mark.parametrize(
    "section",
    [
        {"sources": {"dcgm": {"endpoints": ["n0001:9400/metrics"]}}},
        {"sources": {"prometheus": {"url": "prometheus:9090"}}},
        {"actuators": {"webhook": {"url": "ftp://hooks.example/x"}}},
    ],
)
def test_a_url_without_http_is_refused_where_it_is_written(
    tmp_path: Path, section: dict[str, object]
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(section), encoding="utf-8")
    with pytest.raises(InputError, match="must start with http:// or https://"):
        load_daemon_config(path)


def test_the_safety_defaults_are_the_files_not_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The packaged file and the model agree today; the twin must follow the file if they part."""
    import seamguard.control.safety_config as safety_module

    edited = {"safety": {"budgets": {"max_nodes": 5}, "storm": {"max_domains": 2}}}
    monkeypatch.setattr(safety_module, "default_policy", lambda: edited)
    got = safety_from_mapping({"storm": {"max_domains": 3}})
    assert got.budgets.max_nodes == 5 and got.storm.max_domains == 3
