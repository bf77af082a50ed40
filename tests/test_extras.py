"""The optional extras (pyproject.toml): ``kubernetes`` (the official client, for the Kubernetes
source and actuator) and ``plots`` (matplotlib, for ``seamguard simulate``'s report). The CLI and a
Slurm-only daemon start without either; a config or command that needs one, without it installed,
is refused at once naming the extra to install."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seamguard.cli import app
from seamguard.errors import InputError

KUBE_HINT = "the kubernetes client is not installed: pip install 'seamguard[kubernetes]'"
runner = CliRunner(env={"COLUMNS": "400"})


def absent(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """As if ``package`` were not installed: it and its submodules already imported in this
    process read as missing (``None`` in ``sys.modules`` makes an import raise ImportError)."""
    for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


def write_inputs(tmp_path: Path, config: str) -> list[str]:
    (tmp_path / "inv.csv").write_text("node,rack,cdu,leaf,gpus\nn0000,r000,cdu0,leaf00,8\n")
    (tmp_path / "jobs.csv").write_text("job,job_class,nodes,start,end\n")
    (tmp_path / "site.yaml").write_text(config)
    return ["--inventory", str(tmp_path / "inv.csv"), "--jobs", str(tmp_path / "jobs.csv"),
            "--config", str(tmp_path / "site.yaml"), "--journal", str(tmp_path / "journal.sqlite")]  # fmt: skip


@pytest.mark.parametrize(
    ("section", "config"),
    [
        ("sources.kubernetes", "sources:\n  kubernetes: {in_cluster: true}\n"),
        ("actuators.kubernetes", "actuators:\n  kubernetes: {in_cluster: true}\n"),
    ],
)
def test_run_with_a_kubernetes_section_but_no_client_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, config: str
) -> None:
    absent(monkeypatch, "kubernetes")
    result = runner.invoke(app, ["run", *write_inputs(tmp_path, config), "--ticks", "1"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {section}: {KUBE_HINT}"
    assert not (tmp_path / "journal.sqlite").exists(), "refused before anything was opened"


def test_a_connection_without_the_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from seamguard.kube_connection import client_configuration, require_client
    from seamguard.telemetry.sources.kubernetes import ClientPodPages
    from seamguard.telemetry.sources.kubernetes_config import KubernetesSourceConfig

    require_client("actuators.kubernetes")  # installed here (the dev extra)
    absent(monkeypatch, "kubernetes")
    with pytest.raises(InputError) as refused:
        ClientPodPages(KubernetesSourceConfig(in_cluster=True))
    assert str(refused.value) == f"sources.kubernetes: {KUBE_HINT}"
    with pytest.raises(InputError, match=r"pip install 'seamguard\[kubernetes\]'"):
        client_configuration("https://k8s.example:6443", True, False, None, None)


def test_simulate_without_matplotlib_names_the_extra_before_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seamguard.simulate_run
    from seamguard.twin.report import require_plots

    require_plots()  # installed here (the dev extra)
    absent(monkeypatch, "matplotlib")

    def no_campaign(*_a: object, **_k: object) -> None:
        raise AssertionError("the campaign ran before the missing extra was reported")

    monkeypatch.setattr(seamguard.simulate_run, "run_campaign", no_campaign)
    out = tmp_path / "sim-out"
    result = runner.invoke(
        app, ["simulate", "--scenario", "thermal-cascade", "--seeds", "1", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        "error: seamguard simulate: matplotlib is not installed (the plots of report.html): "
        "pip install 'seamguard[plots]'"
    )
    assert not out.exists()


# A fresh interpreter: what importing the CLI and running a Slurm-only daemon load. A finder first
# on sys.meta_path records every attempt to import either package, even one whose ImportError some
# library would swallow.
PROBE = textwrap.dedent(
    """
    import json, sys

    EXTRAS = ("kubernetes", "matplotlib")
    tried = []

    class Recorder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.split(".")[0] in EXTRAS:
                tried.append(name)
            return None

    sys.meta_path.insert(0, Recorder)
    from seamguard.cli import main
    after_import = sorted(tried)
    sys.argv = ["seamguard", "run", *sys.argv[1:]]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    from seamguard.site_config import load_daemon_config

    load_daemon_config(__import__("pathlib").Path(sys.argv[sys.argv.index("--config") + 1]))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in EXTRAS)
    print(json.dumps({"code": code, "after_import": after_import, "tried": sorted(set(tried)),
                      "loaded": loaded}))
    """
)

SLURM_ONLY = """\
engine: {tick_s: 1}
sources:
  slurm: {scontrol: /nonexistent/scontrol, squeue: /nonexistent/squeue, sinfo: /nonexistent/sinfo}
actuators:
  slurm: {mode: advise, scontrol: /nonexistent/scontrol}
"""


def test_the_cli_and_a_slurm_only_daemon_import_neither_extra(tmp_path: Path) -> None:
    """``seamguard run`` of a Slurm-only config (its Slurm out of reach: notices, not failures),
    serving HTTP, for one tick: neither package is imported, nor even tried."""
    args = [*write_inputs(tmp_path, SLURM_ONLY), "--listen", "127.0.0.1:0", "--ticks", "1"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"code": 0, "after_import": [], "tried": [], "loaded": []}, (seen, done.stderr[-2000:])
    assert (tmp_path / "journal.sqlite").exists()


def test_kubernetes_sections_load_without_the_client(tmp_path: Path) -> None:
    """Loading a config with both Kubernetes sections (and every module that defines them) must not
    need the client: only connecting does."""
    config = tmp_path / "site.yaml"
    config.write_text(
        "sources:\n  kubernetes: {in_cluster: true}\nactuators:\n  kubernetes: {in_cluster: true, mode: advise}\n"
    )
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.modules["kubernetes"] = None
        sys.modules["matplotlib"] = None
        import seamguard.cli, seamguard.actuators.dispatch, seamguard.telemetry.sources.build
        from seamguard.site_config import load_daemon_config
        site = load_daemon_config(Path({str(config)!r})).site
        assert site.sources.kubernetes is not None and site.actuators.kubernetes is not None
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
