"""The Kubernetes source: GPU pods into job placements, read with the official client from a
stand-in API server on loopback (``tests/kube_api.py``) with pod lists in the API's own shape
(``tests/fixtures/kubernetes``)."""

from __future__ import annotations

import copy
import json
import math
import ssl
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from pydantic import ValidationError

from seamguard.model.inventory import JobRecord
from seamguard.model.states import JobClass
from seamguard.model.topology import Topology, build_topology
from seamguard.model.workload import placement_node_job
from seamguard.site_config import daemon_config_from_mapping
from seamguard.telemetry.sources.build import build_sources
from seamguard.telemetry.sources.kubernetes import FIELD_SELECTOR, KubernetesSource
from seamguard.telemetry.sources.kubernetes_config import KubernetesSourceConfig
from seamguard.telemetry.sources.kubernetes_pods import gpu_quantity, group_jobs, read_pod
from tests.conftest import small_inventory
from tests.kube_api import TOKEN, KubeState, kube_api, synthetic_pages, write_kubeconfig

FIXTURES = Path(__file__).parent / "fixtures" / "kubernetes"
NOW = datetime.fromisoformat("2026-12-05T12:30:00Z").timestamp()


def pages() -> list[dict[str, Any]]:
    return [json.loads((FIXTURES / f"podlist-page{i}.json").read_text()) for i in (1, 2)]


def all_pods() -> list[dict[str, Any]]:
    return [p for page in pages() for p in page["items"]]


def pod_named(name: str) -> dict[str, Any]:
    return copy.deepcopy(next(p for p in all_pods() if p["metadata"]["name"] == name))


@pytest.fixture
def topo() -> Topology:
    return build_topology(small_inventory(), ())


def source(topo: Topology, tmp_path: Path, url: str, **over: Any) -> KubernetesSource:
    cfg = KubernetesSourceConfig(kubeconfig=str(write_kubeconfig(tmp_path / "kubeconfig", url)), **over)
    return KubernetesSource(topo, cfg)


def by_job(records: tuple[JobRecord, ...] | None) -> dict[str, JobRecord]:
    assert records is not None
    return {r.job: r for r in records}


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# ---- the fixtures are what the API server sends ------------------------------------------------


def test_the_fixtures_are_pod_lists_the_official_client_reads() -> None:
    """Each page deserialises into the client's own ``V1PodList`` with nothing lost on the way:
    the fixtures have the API's shape, field names and types."""
    from kubernetes import client

    api = client.ApiClient()
    for page in pages():
        typed = api.deserialize(json.dumps(page), "V1PodList", "application/json")
        back = api.sanitize_for_serialization(typed)
        assert [p["metadata"]["name"] for p in back["items"]] == [
            p["metadata"]["name"] for p in page["items"]
        ]
        assert [p["spec"].get("nodeName") for p in back["items"]] == [
            p["spec"].get("nodeName") for p in page["items"]
        ]
    assert pages()[0]["metadata"]["continue"] and "continue" not in pages()[1]["metadata"]


# ---- end to end through the official client --------------------------------------------------


def test_placements_from_two_pages_read_by_the_official_client(topo: Topology, tmp_path: Path) -> None:
    state = KubeState(pages())
    with kube_api(state) as url:
        src = source(topo, tmp_path, url, label_selector="seamguard.io/watch!=false", page_size=4)
        got = src.collect(NOW)
    # two pages, the second asked for with the first's continue token, the token of the kubeconfig
    assert [path for path, _ in state.requests] == ["/api/v1/pods", "/api/v1/pods"]
    first, second = (q for _, q in state.requests)
    assert first == {
        "limit": "4",
        "fieldSelector": FIELD_SELECTOR,
        "labelSelector": "seamguard.io/watch!=false",
    }
    assert second == {**first, "continue": pages()[0]["metadata"]["continue"]}
    assert state.auth == ["Bearer sg-test-token-3f9a"] * 2
    jobs = by_job(src.placements())
    assert sorted(jobs) == ["kubeflow.pytorch-dist-mnist", "llm.llama-pretrain", "ml.bert-finetune"]
    # a Kubernetes Job: its class from the pod label, its end from activeDeadlineSeconds
    bert = jobs["ml.bert-finetune"]
    assert bert.nodes == ("n00", "n01") and bert.job_class is JobClass.EXPLORATORY
    assert bert.start == ts("2026-12-05T10:00:00Z") and bert.end == ts("2026-12-05T10:00:01Z") + 86400
    # a JobSet: one job across its child Job's pods, storage from the annotation, no deadline
    llama = jobs["llm.llama-pretrain"]
    assert llama.nodes == ("n02", "n03") and llama.storage == "ckpt0" and math.isinf(llama.end)
    assert llama.job_class is JobClass.SYNC_TRAINING  # the default
    assert jobs["kubeflow.pytorch-dist-mnist"].nodes == ("n04", "n05")
    # the pod without GPUs (n06), the unscheduled and the Succeeded (n07) pods hold no GPUs
    assert not {"n06", "n07"} & {n for r in jobs.values() for n in r.nodes}
    assert len(got.batch) == 0 and [str(n) for n in got.notices] == [
        "kubernetes pods: 1 GPU pod(s) on 1 node(s) not in the inventory, left out: gpu-node-x9 "
        "(e.g. pod ml/stable-diffusion-0)"
    ]
    assert src.last is not None and src.last.listed == 10


def test_each_configured_namespace_is_listed_on_its_own(topo: Topology, tmp_path: Path) -> None:
    ml = [p for p in all_pods() if p["metadata"]["namespace"] == "ml"]
    state = KubeState(
        [], namespaces={"ml": [{"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": ml}]}
    )
    with kube_api(state) as url:
        src = source(topo, tmp_path, url, namespaces=("ml", "llm"))
        src.collect(NOW)
    assert [p for p, _ in state.requests] == ["/api/v1/namespaces/ml/pods", "/api/v1/namespaces/llm/pods"]
    assert sorted(by_job(src.placements())) == ["ml.bert-finetune"]


def test_a_hundred_thousand_pods_are_read_in_pages(tmp_path: Path) -> None:
    """100,000 GPUs: 12,500 nodes of 8, one single-GPU pod per GPU, a job of 4 nodes each, listed
    in pages of 5,000, every page followed; the placement is one the engine accepts."""
    inventory = small_inventory(nodes=12_500, gpus=8)
    topo = build_topology(inventory, ())

    def pod(i: int) -> dict[str, Any]:
        return {"metadata": {"name": f"w-{i}", "namespace": "ml", "labels": {"job-name": f"j{i // 32}"}},
                "spec": {"nodeName": f"n{i // 8:02d}", "containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
                "status": {"phase": "Running"}}  # fmt: skip

    state = KubeState(synthetic_pages(100_000, 5_000, pod))
    with kube_api(state) as url:
        src = source(topo, tmp_path, url, page_size=5_000, timeout_s=60)
        assert src.collect(NOW).notices == ()
        assert len(state.requests) == 20 and state.requests[-1][1]["continue"] == "tok95000"
        jobs = src.placements()
        assert jobs is not None and len(jobs) == 3_125 and src.last is not None and src.last.listed == 100_000
        assert by_job(jobs)["ml.j7"].nodes == ("n28", "n29", "n30", "n31")
        placed = placement_node_job(build_topology(inventory, jobs), {r.job: r.nodes for r in jobs})
        assert (placed >= 0).all()
        # the same list past max_pods is abandoned, not read without end
        capped = source(topo, tmp_path, url, page_size=5_000, max_pods=9_999, timeout_s=60)
        assert [n.message for n in capped.collect(NOW).notices] == [
            "more than max_pods=9999 pods listed; abandoned"
        ]
        assert capped.placements() is None


# ---- an API server that does not answer well --------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "said"),
    [
        ({"fail": 403}, 'HTTP 403 Forbidden (RBAC: seamguard\'s account needs get/list on pods, docs/kubernetes.md): pods is forbidden: User "system:serviceaccount:seamguard:seamguard" cannot list'),
        ({"fail": 500}, "HTTP 500 Internal Server Error: pods is forbidden"),
        ({"body": b"<html>502 Bad Gateway</html>"}, "not JSON (Expecting value at character 0): '<html>502 Bad Gateway</html>'"),
        ({"body": b'{"kind": "Status", "code": 200}'}, "not a PodList: \"{'kind': 'Status', 'code': 200}\""),
        ({"delay_s": 1.5}, "no answer within timeout_s=0.5 (ReadTimeoutError)"),
    ],
)  # fmt: skip
def test_a_failing_api_server_is_a_notice_and_no_placements(
    topo: Topology, tmp_path: Path, setup: dict[str, Any], said: str
) -> None:
    """After a good read, a failing one makes ``placements()`` None (the daemon keeps its jobs),
    says why in one notice, and raises nothing."""
    state = KubeState(pages())
    with kube_api(state) as url:
        src = source(topo, tmp_path, url, timeout_s=0.5, poll_s=0)
        src.collect(NOW)
        assert src.placements()
        for key, value in setup.items():
            setattr(state, key, value)
        got = src.collect(NOW + 60)
    assert src.placements() is None
    assert len(got.notices) == 1 and got.notices[0].where == "GET /api/v1/pods"
    assert got.notices[0].message.startswith(said), got.notices[0].message


def test_a_refused_token_is_401(topo: Topology, tmp_path: Path) -> None:
    with kube_api(KubeState(pages())) as url:
        cfg = KubernetesSourceConfig(kubeconfig=str(write_kubeconfig(tmp_path / "kc", url, token="stale")))
        got = KubernetesSource(topo, cfg).collect(NOW)
    assert got.notices[0].message.startswith("HTTP 401 Unauthorized (the credentials were refused")


def test_an_expired_or_repeated_continue_token_ends_the_read(topo: Topology, tmp_path: Path) -> None:
    with kube_api(KubeState(pages(), expired=True)) as url:
        got = source(topo, tmp_path, url).collect(NOW)
    assert "HTTP 410" in got.notices[0].message and "continue token expired" in got.notices[0].message
    looping = pages()
    looping[1]["metadata"]["continue"] = looping[0]["metadata"]["continue"]  # page 2 leads to page 2
    with kube_api(KubeState(looping)) as url:
        src = source(topo, tmp_path, url, max_pods=1_000)
        got = src.collect(NOW)
    assert got.notices[0].message.startswith("the server repeated or garbled a continue token")
    assert src.placements() is None


def test_a_page_past_max_page_bytes_is_refused(topo: Topology, tmp_path: Path) -> None:
    big = pages()[0]
    big["items"] *= 8  # ~120 kB as the server sends it (compact JSON)
    del big["metadata"]["continue"]
    with kube_api(KubeState([big])) as url:
        got = source(topo, tmp_path, url, max_page_bytes=64 * 1024).collect(NOW)
    assert got.notices[0].message == "a page is larger than max_page_bytes=65536; lower page_size"


def test_in_cluster_the_service_account_token_and_ca_are_used(
    topo: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``in_cluster: true`` as in a pod: the API server from KUBERNETES_SERVICE_HOST/PORT over
    TLS checked against the ServiceAccount's CA, its token as the bearer token."""
    from kubernetes.config import incluster_config

    ca, other_ca = trustme.CA(), trustme.CA()
    cert, other = tmp_path / "ca.crt", tmp_path / "other-ca.crt"
    ca.cert_pem.write_to_path(str(cert))
    other_ca.cert_pem.write_to_path(str(other))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    state = KubeState(pages())
    with kube_api(state, tls=tls) as url:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", url.rsplit(":", 1)[1])
        src = KubernetesSource(topo, KubernetesSourceConfig(in_cluster=True))
        src.collect(NOW)
    assert state.auth == [f"bearer {TOKEN}"] * 2  # the client's in-cluster loader writes it so
    assert sorted(by_job(src.placements())) == [
        "kubeflow.pytorch-dist-mnist",
        "llm.llama-pretrain",
        "ml.bert-finetune",
    ]
    # a server whose certificate the CA does not vouch for is no answer
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(other))
    with kube_api(KubeState(pages()), tls=tls) as url:
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", url.rsplit(":", 1)[1])
        got = KubernetesSource(topo, KubernetesSourceConfig(in_cluster=True)).collect(NOW)
    assert got.notices[0].message.startswith("no answer: SSLError: [SSL: CERTIFICATE_VERIFY_FAILED]")


def test_a_missing_kubeconfig_is_a_notice(topo: Topology, tmp_path: Path) -> None:
    src = KubernetesSource(topo, KubernetesSourceConfig(kubeconfig=str(tmp_path / "nope")))
    got = src.collect(NOW)
    assert got.notices[0].where == "kubeconfig" and "cannot set up the client" in got.notices[0].message
    assert src.placements() is None


def test_pods_are_listed_every_poll_s_and_the_notices_repeat_between(topo: Topology, tmp_path: Path) -> None:
    state = KubeState(pages())
    with kube_api(state) as url:
        src = source(topo, tmp_path, url, poll_s=60)
        first = src.collect(NOW)
        again = src.collect(NOW + 59)
        assert len(state.requests) == 2 and again.notices == first.notices and src.placements()
        src.collect(NOW + 60)
        assert len(state.requests) == 4


# ---- the rules, one by one ---------------------------------------------------------------------


def test_which_pods_hold_gpus() -> None:
    cfg = KubernetesSourceConfig()
    assert read_pod(pod_named("pytorch-dist-mnist-worker-0"), cfg) is not None
    assert read_pod(pod_named("coredns-7db6d8ff4d-5xk9v"), cfg) is None  # no GPUs
    assert read_pod(pod_named("eval-sweep-0-8d2kq"), cfg) is None  # Pending, not bound
    assert read_pod(pod_named("preprocess-0-m3n8x"), cfg) is None  # Succeeded
    bound = pod_named("eval-sweep-0-8d2kq")
    bound["spec"]["nodeName"] = "n07"  # bound, pulling its image: its GPUs are taken
    assert read_pod(bound, cfg) is not None
    assert read_pod(bound, KubernetesSourceConfig(phases=("Running",))) is None
    lost = pod_named("bert-finetune-0-q7m2k")
    lost["status"]["phase"] = "Unknown"  # the node stopped reporting: the job is still there
    assert read_pod(lost, cfg) is not None
    other = KubernetesSourceConfig(gpu_resource="amd.com/gpu")
    assert read_pod(pod_named("bert-finetune-0-q7m2k"), other) is None


def test_gpu_counts_follow_the_schedulers_arithmetic() -> None:
    cfg = KubernetesSourceConfig()
    p = pod_named("bert-finetune-0-q7m2k")
    # 8 requested and limited (one request, not two), 2 limited alone (requests default to limits)
    p["spec"]["containers"].append({"name": "side", "resources": {"limits": {"nvidia.com/gpu": 2}}})
    got = read_pod(p, cfg)
    assert got is not None and got.gpus == 10
    p["spec"]["initContainers"] = [{"name": "warm", "resources": {"limits": {"nvidia.com/gpu": "16"}}}]
    got = read_pod(p, cfg)
    assert got is not None and got.gpus == 16
    assert gpu_quantity("1k", "x") == 1000
    for bad in ("500m", "-1", "eight"):
        with pytest.raises(ValueError, match="x"):
            gpu_quantity(bad, "x")


def test_the_first_job_label_present_names_the_job() -> None:
    """A JobSet's pods carry their child Job's name too; the JobSet label comes first."""
    cfg = KubernetesSourceConfig()
    pod = read_pod(pod_named("llama-pretrain-workers-0-0-h8s3d"), cfg)
    assert pod is not None and (pod.job, pod.group) == (
        "llm.llama-pretrain",
        "jobset.sigs.k8s.io/jobset-name",
    )
    flipped = KubernetesSourceConfig(job_labels=("job-name", "jobset.sigs.k8s.io/jobset-name"))
    pod = read_pod(pod_named("llama-pretrain-workers-0-0-h8s3d"), flipped)
    assert pod is not None and pod.job == "llm.llama-pretrain-workers-0"
    bare = pod_named("coredns-7db6d8ff4d-5xk9v")  # no job label: its controlling owner
    bare["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    pod = read_pod(bare, cfg)
    assert pod is not None and (pod.job, pod.group) == ("kube-system.coredns-7db6d8ff4d", "owner ReplicaSet")
    del bare["metadata"]["ownerReferences"]
    pod = read_pod(bare, KubernetesSourceConfig(job_id="{name}"))
    assert pod is not None and (pod.job, pod.group) == ("coredns-7db6d8ff4d-5xk9v", "pod")


def test_job_class_storage_and_nodes_of_a_job() -> None:
    cfg = KubernetesSourceConfig(label_classes={"training.kubeflow.org/job-name": "pipeline_training"},
                                 node_name="{name}.cluster.local")  # fmt: skip
    items = [pod_named(n) for n in ("pytorch-dist-mnist-master-0", "pytorch-dist-mnist-worker-0",
                                    "bert-finetune-0-q7m2k", "bert-finetune-1-z4t8w")]  # fmt: skip
    for p in items:
        p["spec"]["nodeName"] += ".cluster.local"
    items[3]["metadata"]["labels"]["seamguard.io/job-class"] = "sync-training"  # a typo
    known = {f"{n.node}.cluster.local": n.node for n in small_inventory().nodes}
    got = group_jobs([p for p in (read_pod(i, cfg) for i in items) if p], cfg, known, NOW)
    jobs = by_job(got.records)
    assert jobs["kubeflow.pytorch-dist-mnist"].job_class is JobClass.PIPELINE_TRAINING
    assert jobs["kubeflow.pytorch-dist-mnist"].nodes == ("n04", "n05")
    assert jobs["ml.bert-finetune"].job_class is JobClass.EXPLORATORY  # the other pod's label
    assert got.problems == (
        "job ml.bert-finetune: pods name different classes (exploratory, sync-training); exploratory used",
    )
    items[2]["metadata"]["labels"]["seamguard.io/job-class"] = "sync-training"
    got = group_jobs([p for p in (read_pod(i, cfg) for i in items) if p], cfg, known, NOW)
    assert by_job(got.records)["ml.bert-finetune"].job_class is JobClass.SYNC_TRAINING  # the default
    assert "unknown job class 'sync-training'" in got.problems[0]


def test_nodes_shared_by_jobs_and_malformed_pods_are_said(topo: Topology, tmp_path: Path) -> None:
    items = [pod_named("bert-finetune-0-q7m2k"), pod_named("pytorch-dist-mnist-master-0")]
    items[1]["spec"]["nodeName"] = "n00"
    broken = pod_named("bert-finetune-1-z4t8w")
    broken["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "lots"
    page = {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [*items, broken, "not a pod"]}
    with kube_api(KubeState([page])) as url:
        src = source(topo, tmp_path, url)
        got = [n.message for n in src.collect(NOW).notices]
    assert got == [
        "1 node(s) hold GPU pods of several jobs; each is placed with the job holding most of its GPUs, "
        "e.g. n00: ml.bert-finetune (8 GPUs), kubeflow.pytorch-dist-mnist (1 GPUs)",
        "skipped: pod ml/bert-finetune-1-z4t8w spec.containers[0].resources.limits[nvidia.com/gpu] is not a quantity: 'lots'",
        "skipped: an item of the list is not an object",
    ]
    # n00 goes to the job with 8 of its GPUs; the other, left with no node, is no job
    assert {j: r.nodes for j, r in by_job(src.placements()).items()} == {"ml.bert-finetune": ("n00",)}
    ties = [pod_named("pytorch-dist-mnist-master-0"), pod_named("pytorch-dist-mnist-worker-0")]
    ties[1]["metadata"]["namespace"] = "a-team"  # as many GPUs on n04, another job: the first name
    ties[1]["spec"]["nodeName"] = "n04"
    cfg = KubernetesSourceConfig()
    known = {n.node: n.node for n in small_inventory().nodes}
    got = group_jobs([p for p in (read_pod(i, cfg) for i in ties) if p], cfg, known, NOW)
    assert [(r.job, r.nodes) for r in got.records] == [("a-team.pytorch-dist-mnist", ("n04",))]


# ---- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ({"job_labels": ["not a label"]}, "not a Kubernetes label or annotation key: 'not a label'"),
        ({"namespaces": ["ML"]}, "not a namespace name (lower-case DNS label): 'ML'"),
        ({"job_id": "{namespace}/{name}"}, "a job name holds no '/' or spaces"),
        ({"job_id": "{uid}"}, "expected a template of {name} and optionally {namespace}"),
        ({"node_name": "{node}"}, "expected a template over {name} only"),
        ({"phases": ["Succeeded"]}, "phases.0"),
        ({"in_cluster": True, "host": "https://10.0.0.1"}, "in_cluster: true reads the pod's ServiceAccount"),
        ({"label_classes": {"app": "online_decode"}}, "label_classes names label(s) not in job_labels: app"),
        ({"default_job_class": "training"}, "default_job_class"),
        ({"page_size": 0}, "page_size"),
        ({"pods": True}, "pods"),
    ],
)
def test_bad_config_is_refused_naming_the_key(section: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError) as err:
        KubernetesSourceConfig.model_validate(section)
    assert said in str(err.value)


def test_loading_the_section_does_not_import_the_client(topo: Topology) -> None:
    code = (
        "import sys; from seamguard.site_config import daemon_config_from_mapping; "
        "c = daemon_config_from_mapping({'sources': {'kubernetes': {'namespaces': ['ml']}}}); "
        "from seamguard.telemetry.sources.build import build_sources; "
        "assert c.site.sources.kubernetes.namespaces == ('ml',); "
        "print('kubernetes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    config = daemon_config_from_mapping({"sources": {"kubernetes": {}}})
    assert [s.name for s in build_sources(config.site.sources, topo)] == ["kubernetes"]


# ---- in the daemon, over HTTP ------------------------------------------------------------------


def test_the_daemon_shows_a_refused_pod_list_in_its_status(topo: Topology, tmp_path: Path) -> None:
    from seamguard.daemon import Daemon
    from seamguard.daemon_run import serve_api

    state = KubeState(pages(), fail=403)
    with kube_api(state) as url:
        kc = write_kubeconfig(tmp_path / "kubeconfig", url)
        config = daemon_config_from_mapping({"engine": {"tick_s": 1, "stale_after_s": 10, "observe_every_s": 10},
                                      "sources": {"kubernetes": {"kubeconfig": str(kc)}}})  # fmt: skip
        daemon = Daemon(config, topo, build_sources(config.site.sources, topo))
        server = serve_api(daemon, "127.0.0.1", 0)
        try:
            daemon.step(NOW)
            st = httpx.get(f"{server.url}/v1/status", trust_env=False).json()
        finally:
            server.stop()
    assert st["sources"] == ["kubernetes"]
    assert [n.split(": HTTP 403")[0] for n in st["active_notices"]] == ["kubernetes GET /api/v1/pods"]
