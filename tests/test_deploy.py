"""deploy/: the systemd unit, the container image and the Kubernetes manifests (deploy/README.md).

The unit goes through ``systemd-analyze verify`` and ``security --offline``; every Kubernetes
document is deserialized into the official client's model of its kind and checked, field by field,
against the model's ``attribute_map`` (the client drops a field it does not know, so a typo such as
``readinesProbe`` would otherwise pass unseen); the Containerfile is read for the instructions it
must have. Where the three name a flag of ``seamguard run``, it must be one of its real options."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from seamguard.cli import app
from seamguard.site_config import load_daemon_config
from tests.components import unavailable

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "systemd" / "seamguard.service"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
SRC = Path(__file__).resolve().parent.parent / "src" / "seamguard"
IMAGE_UID = 10001  # the Containerfile's USER, and the Deployment's runAsUser

# What each call the Kubernetes source and actuator make needs from RBAC (resource, verb).
KUBE_CALLS = {
    "read_node": ("nodes", "get"),
    "patch_node": ("nodes", "patch"),
    "list_pod_for_all_namespaces": ("pods", "list"),
    "list_namespaced_pod": ("pods", "list"),
    "create_namespaced_pod_eviction": ("pods/eviction", "create"),
}
KUBE_USERS = {  # the ClusterRole that grants each module's calls
    SRC / "telemetry" / "sources" / "kubernetes.py": "seamguard-pod-reader",
    SRC / "actuators" / "kubernetes.py": "seamguard-node-actuator",
}


# seamguard run's command line ---------------------------------------------------------------------


def run_options() -> tuple[set[str], set[str]]:
    """(every option of ``seamguard run``, the required ones), from the CLI itself."""
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    every: set[str] = set()
    required: set[str] = set()
    for param in command.params:
        every.update(param.opts)
        if param.required:
            required.update(param.opts)
    return every, required


def check_run_args(args: list[str], where: str) -> dict[str, str]:
    """``args`` after the program: ``run`` and flags ``seamguard run`` has, each with its value."""
    assert args[0] == "run", f"{where}: {args}"
    every, required = run_options()
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    unknown = set(flags) - every
    assert not unknown, f"{where}: not options of seamguard run: {sorted(unknown)}"
    assert required <= set(flags), f"{where}: missing {sorted(required - set(flags))}"
    assert flags["--listen"] == "0.0.0.0:8470", where
    return flags


# systemd ----------------------------------------------------------------------------------------


def unit_directives(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values in order (continuation lines joined, comments dropped)."""
    out: dict[str, list[str]] = {}
    section = ""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        unavailable("systemd-analyze is not installed (Debian package systemd; scripts/system_packages.sh)")
    return path


def unit_to_verify(tmp_path: Path) -> Path:
    """The unit as shipped, unless its ExecStart binary is missing here (``verify`` checks it is
    executable): then a copy naming this venv's seamguard."""
    text = UNIT.read_text()
    binary = shlex.split(unit_directives(text)["Service.ExecStart"][0])[0]
    if Path(binary).exists():
        return UNIT
    here = Path(sys.executable).parent / "seamguard"
    assert here.exists(), f"no seamguard beside {sys.executable}"
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(binary, str(here)))
    return copy


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """``verify`` exits 0 on an unknown key or a bad value, only warning on stderr, so a line
    naming the unit fails the test too (a typo such as ``ProtectSytem`` would disable a guard)."""
    unit = unit_to_verify(tmp_path)
    done = subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    said = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    assert done.returncode == 0 and not said, done.stdout + done.stderr


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    """systemd's own exposure score (0 best, 10 worst) stays under 2.5; the unit scores 1.5."""
    unit = unit_to_verify(tmp_path)
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--threshold=25", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


def test_the_unit_runs_seamguard_as_documented() -> None:
    d = unit_directives(UNIT.read_text())
    service = {k.removeprefix("Service."): v for k, v in d.items() if k.startswith("Service.")}
    assert service["User"] == ["seamguard"] and service["Group"] == ["seamguard"]
    assert service["ProtectSystem"] == ["strict"] and service["NoNewPrivileges"] == ["true"]
    assert service["Restart"] == ["on-failure"]
    assert service["EnvironmentFile"] == ["/etc/seamguard/env"]
    assert re.fullmatch(r"/bin/kill -HUP \$MAINPID", service["ExecReload"][0]), service["ExecReload"]
    argv = shlex.split(service["ExecStart"][0])
    assert Path(argv[0]).name == "seamguard"
    flags = check_run_args(argv[1:], "ExecStart")
    assert "--jobs" in flags and flags["--config"] == "/etc/seamguard/site.yaml"
    journal_dir = str(Path(flags["--journal"]).parent)  # the journal and its .lock beside it
    writable = " ".join(service["ReadWritePaths"]).split()
    assert journal_dir in writable, f"{journal_dir} not in ReadWritePaths {writable}"


# Kubernetes -------------------------------------------------------------------------------------


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                yield f"{path.name}#{i}", doc


def model_name(doc: dict[str, Any]) -> str:
    """``apps/v1`` ``Deployment`` -> ``V1Deployment``, the client's model of the kind."""
    version = str(doc["apiVersion"]).rpartition("/")[2]
    return f"{version[0].upper()}{version[1:]}{doc['kind']}"


def unknown_fields(data: Any, type_name: str, where: str) -> list[str]:
    """Every key in ``data`` that the model ``type_name`` (as the client spells types:
    ``V1PodSpec``, ``List[V1Container]``, ``Dict[str, str]``, ``Optional[...]``, ``object``) does not
    have, as a path; recursing into the fields it does have."""
    from kubernetes.client import ApiClient, models

    if match := re.fullmatch(r"Optional\[(.*)\]", type_name):
        return unknown_fields(data, match.group(1), where)
    if match := re.fullmatch(r"List\[(.*)\]", type_name):
        if not isinstance(data, list):
            return [f"{where}: a list expected, got {type(data).__name__}"]
        return [
            p for i, item in enumerate(data) for p in unknown_fields(item, match.group(1), f"{where}[{i}]")
        ]
    if match := re.fullmatch(r"Dict\[([^,]*), (.*)\]", type_name):
        if not isinstance(data, dict):
            return [f"{where}: a mapping expected, got {type(data).__name__}"]
        return [p for k, v in data.items() for p in unknown_fields(v, match.group(2), f"{where}.{k}")]
    if type_name in ApiClient.NATIVE_TYPES_MAPPING:
        return []  # str, int, object (IntOrString, Quantity) ...: no fields of their own
    model = getattr(models, type_name)
    if not isinstance(data, dict):
        return [f"{where}: an object ({type_name}) expected, got {type(data).__name__}"]
    attribute_of = {json_key: attr for attr, json_key in model.attribute_map.items()}
    problems: list[str] = []
    for key, value in data.items():
        if key not in attribute_of:
            problems.append(f"{where}.{key}: not a field of {type_name}")
        else:
            problems.extend(unknown_fields(value, model.openapi_types[attribute_of[key]], f"{where}.{key}"))
    return problems


def deserialize(doc: dict[str, Any], where: str) -> Any:
    """The client's model of ``doc``: types and required fields checked by the client, unknown fields
    by ``unknown_fields``."""
    from kubernetes.client import ApiClient

    name = model_name(doc)
    problems = unknown_fields(doc, name, where)
    assert not problems, "\n".join(problems)
    return ApiClient().deserialize(json.dumps(doc), name, "application/json")


def by_kind() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for where, doc in documents():
        deserialize(doc, where)
        out.setdefault(doc["kind"], []).append(doc)
    return out


def test_every_manifest_is_a_valid_object_of_its_kind() -> None:
    kinds = by_kind()
    assert set(kinds) == {
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment",
        "PodDisruptionBudget", "Service",
    }  # fmt: skip
    for kind, docs in kinds.items():
        for doc in docs:
            if kind not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
                assert doc["metadata"]["namespace"] == "seamguard", doc["metadata"]


def test_a_typo_in_a_field_name_is_refused() -> None:
    """What the checker exists for: the client alone would drop ``readinesProbe`` silently."""
    deployment = next(doc for _, doc in documents() if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    container["securityContext"]["runAsNonRot"] = True
    with pytest.raises(AssertionError) as refused:
        deserialize(deployment, "typo")
    said = str(refused.value)
    assert "typo.spec.template.spec.containers[0].readinesProbe: not a field of V1Container" in said
    assert "containers[0].securityContext.runAsNonRot: not a field of V1SecurityContext" in said
    from kubernetes.client import ApiClient

    ApiClient().deserialize(json.dumps(deployment), "V1Deployment", "application/json")  # the client: fine


def test_the_deployment_is_highly_available_and_locked_down() -> None:
    kinds = by_kind()
    (deployment,) = kinds["Deployment"]
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] >= 2
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert any(t["topologyKey"] == "kubernetes.io/hostname" for t in anti)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == IMAGE_UID
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    flags = check_run_args(container["args"], "Deployment args")
    assert flags["--journal"].startswith("postgresql://"), "replicas share one journal (docs/ha.md)"
    (pdb,) = kinds["PodDisruptionBudget"]
    (service,) = kinds["Service"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    accounts = {sa["metadata"]["name"] for sa in kinds["ServiceAccount"]}
    assert pod["serviceAccountName"] in accounts


def test_the_configmap_holds_a_config_seamguard_loads_and_the_pod_mounts(tmp_path: Path) -> None:
    kinds = by_kind()
    (configmap,) = kinds["ConfigMap"]
    (deployment,) = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(mounts) == set(volumes)
    config_volume = next(n for n, v in volumes.items() if "configMap" in v)
    assert volumes[config_volume]["configMap"]["name"] == configmap["metadata"]["name"]
    flags = check_run_args(container["args"], "Deployment args")
    for flag in ("--config", "--inventory"):
        path = Path(flags[flag])
        assert str(path.parent) == mounts[config_volume] and path.name in configmap["data"], flag
    site_file = tmp_path / "site.yaml"
    site_file.write_text(configmap["data"]["site.yaml"])
    site = load_daemon_config(site_file).site
    assert site.ha is not None, "replicas need the ha section (docs/ha.md)"
    tokens = site.service.auth.tokens_file
    assert tokens is not None, "listening on 0.0.0.0 needs tokens (docs/security.md)"
    secret_volume = next(n for n, v in volumes.items() if "secret" in v)
    items = volumes[secret_volume]["secret"]["items"]
    assert str(tokens) in {f"{mounts[secret_volume]}/{item['path']}" for item in items}
    assert site.sources.kubernetes is not None and site.sources.kubernetes.in_cluster
    assert site.actuators.kubernetes is not None and site.actuators.kubernetes.in_cluster


def test_rbac_grants_exactly_the_calls_the_source_and_the_actuator_make() -> None:
    """The calls are read from the two modules (``self._core.<call>``): a call added there without
    its permission here (or a permission nobody uses) fails."""
    roles = {r["metadata"]["name"]: r for r in by_kind()["ClusterRole"]}
    granted_by: dict[str, set[tuple[str, str]]] = {}
    for name, role in roles.items():
        granted_by[name] = set()
        for rule in role["rules"]:
            assert rule["apiGroups"] == [""], rule  # the core group: nodes, pods, pods/eviction
            assert "*" not in rule["resources"] and "*" not in rule["verbs"], rule
            granted_by[name] |= {(res, verb) for res in rule["resources"] for verb in rule["verbs"]}
    for module, role_name in KUBE_USERS.items():
        calls = set(re.findall(r"self\._core\.(\w+)", module.read_text()))
        assert calls, module
        assert calls <= set(KUBE_CALLS), (
            f"{module.name}: calls {sorted(calls - set(KUBE_CALLS))} not in KUBE_CALLS"
        )
        needed = {KUBE_CALLS[c] for c in calls}
        assert granted_by[role_name] == needed, (role_name, granted_by[role_name], needed)
    bound = {
        b["roleRef"]["name"]: {(s["kind"], s["name"], s.get("namespace")) for s in b["subjects"]}
        for b in by_kind()["ClusterRoleBinding"]
    }
    assert set(bound) == set(roles)
    assert all(s == {("ServiceAccount", "seamguard", "seamguard")} for s in bound.values())


# The container image ----------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not logical):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_the_containerfile_runs_seamguard_unprivileged_with_a_health_check() -> None:
    steps = instructions(CONTAINERFILE.read_text())
    stages: list[str] = []
    for word, rest in steps:
        if word == "FROM":
            image, *alias = rest.split()
            if image not in stages:  # an image, not an earlier stage
                name, _, tag = image.partition("@")[0].rpartition(":")
                assert "@sha256:" in image or (name and tag and tag != "latest"), f"unpinned base {image}"
            if alias:
                stages.append(alias[-1])
    assert any(rest.startswith("python:3.11-slim") for word, rest in steps if word == "FROM")
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    final = steps[last:]
    of = {word: [rest for w, rest in final if w == word] for word, _ in final}
    user = of["USER"][-1].split(":")[0]
    assert user not in ("root", "0") and int(user) == IMAGE_UID
    assert any("pip install" in r and ".whl" in r for r in of["RUN"])
    assert of["EXPOSE"] == ["8470"]
    (health,) = of["HEALTHCHECK"]
    assert "CMD" in health and "/healthz" in health and ":8470/" in health
    assert json.loads(of["ENTRYPOINT"][-1]) == ["seamguard"]
    check_run_args(json.loads(of["CMD"][-1]), "CMD")
