"""``sources.kubernetes``: which API server to ask for the pods that hold GPUs, and how to read
them into jobs (the source is ``kubernetes``).

Kept apart from the source so that loading a config never imports the ``kubernetes`` client."""

from __future__ import annotations

import re
import string
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from seamguard.model.states import JobClass
from seamguard.strict_model import StrictModel

PodPhase = Literal["Pending", "Running", "Unknown"]  # Succeeded and Failed pods hold no GPUs

# The label that names a pod's job, for what people run on GPUs. Order matters: a JobSet's pods
# also carry its child Jobs' names, and the whole JobSet is the job (first present label wins).
DEFAULT_JOB_LABELS: tuple[str, ...] = (
    "jobset.sigs.k8s.io/jobset-name",  # JobSet, and Kubeflow Trainer v2 TrainJobs (run as JobSets)
    "training.kubeflow.org/job-name",  # Kubeflow training operator v1: PyTorchJob, TFJob, MPIJob...
    "leaderworkerset.sigs.k8s.io/name",  # LeaderWorkerSet (multi-node inference)
    "volcano.sh/job-name",  # Volcano Job
    "ray.io/cluster",  # KubeRay RayCluster / RayJob
    "batch.kubernetes.io/job-name",  # Kubernetes Job (1.27+)
    "job-name",  # Kubernetes Job (the legacy label, still set)
)
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _key(v: str) -> str:
    if len(v) > 316 or not _LABEL_KEY.fullmatch(v):
        raise ValueError(f"not a Kubernetes label or annotation key: {v!r}")
    return v


class KubernetesSourceConfig(StrictModel):
    """Where the API server is (as the Kubernetes actuator finds it) and what makes a GPU job."""

    host: str | None = Field(default=None, description="API server URL; unset: kubeconfig or in-cluster")
    kubeconfig: str | None = None  # unset: $KUBECONFIG, else ~/.kube/config
    context: str | None = None
    in_cluster: bool = False  # the pod's ServiceAccount token and the cluster CA
    verify_ssl: bool = True  # only with host
    node_name: str = "{name}"  # the Kubernetes node name of an inventory node (as the actuator's)
    namespaces: tuple[str, ...] = ()  # empty: all namespaces (one cluster-wide list)
    label_selector: str = ""  # sent to the API server, e.g. "team=llm"
    gpu_resource: str = "nvidia.com/gpu"  # the device plugin's extended resource
    job_labels: tuple[str, ...] = Field(default=DEFAULT_JOB_LABELS, min_length=1)
    job_id: str = "{namespace}.{name}"  # seamguard's job name from the namespace and label value
    phases: tuple[PodPhase, ...] = Field(default=("Pending", "Running", "Unknown"), min_length=1)
    class_key: str = "seamguard.io/job-class"  # a pod label (else annotation) naming its job class
    default_job_class: JobClass = JobClass.SYNC_TRAINING
    label_classes: dict[str, JobClass] = Field(default_factory=dict)  # job label -> class
    storage_annotation: str = "seamguard.io/storage"  # names the job's checkpoint storage
    timeout_s: float = Field(default=10.0, gt=0, le=300)  # per request (one page)
    poll_s: float = Field(default=60.0, ge=0)  # pods are listed at most this often
    page_size: int = Field(default=500, ge=1, le=10_000)  # the list's `limit`
    max_pods: int = Field(default=1_000_000, ge=1)  # a list past this is abandoned, with a notice
    max_page_bytes: int = Field(default=64 * 2**20, ge=64 * 1024)  # one page's body

    @field_validator("job_labels", "label_classes", mode="after")
    @classmethod
    def _keys(cls, v: tuple[str, ...] | dict[str, JobClass]) -> tuple[str, ...] | dict[str, JobClass]:
        for k in v:
            _key(k)
        return v

    @field_validator("class_key", "storage_annotation")
    @classmethod
    def _one_key(cls, v: str) -> str:
        return _key(v)

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [n for n in v if len(n) > 63 or not _NAMESPACE.fullmatch(n)]
        if bad:
            raise ValueError(f"not a namespace name (lower-case DNS label): {', '.join(map(repr, bad))}")
        return v

    @field_validator("node_name")
    @classmethod
    def _node_template(cls, v: str) -> str:
        fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        if fields != {"name"}:
            raise ValueError(
                f"expected a template over {{name}} only, e.g. '{{name}}.cluster.local', got {v!r}"
            )
        return v

    @field_validator("job_id")
    @classmethod
    def _template(cls, v: str) -> str:
        fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        if "name" not in fields or not fields <= {"name", "namespace"}:
            raise ValueError(f"expected a template of {{name}} and optionally {{namespace}}, got {v!r}")
        if "/" in v or any(ch.isspace() for ch in v):
            raise ValueError(f"a job name holds no '/' or spaces, got {v!r}")
        return v

    @model_validator(mode="after")
    def _where(self) -> Self:
        if self.in_cluster and (self.host is not None or self.kubeconfig is not None):
            raise ValueError(
                "in_cluster: true reads the pod's ServiceAccount; do not also set host or kubeconfig"
            )
        unknown = sorted(set(self.label_classes) - set(self.job_labels))
        if unknown:
            raise ValueError(f"label_classes names label(s) not in job_labels: {', '.join(unknown)}")
        return self
