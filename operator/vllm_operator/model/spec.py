"""VLLMDeployment objects parsed into frozen dataclasses: the one place that reads the CR's spec.

The API server already validated the object against the CRD schema and its CEL rules; parsing
applies the schema's defaults again (objects stored before a default existed, or API servers
that did not apply them) and checks what the schema cannot express.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .schema import with_defaults

CPU, GPU = "CPU", "GPU"
GPU_RESOURCE = "nvidia.com/gpu"
_OPTIONAL_OBJECTS = (
    "engine", "lora", "orca", "modelCache", "monitoring", "podDisruptionBudget", "networkPolicy",
)  # fmt: skip


class InvalidSpec(ValueError):
    """A spec the schema let through but the operator cannot act on."""


@dataclass(frozen=True)
class Images:
    """The operator's default server images (per accelerator)."""

    gpu: str
    cpu: str


@dataclass(frozen=True)
class ModelSource:
    uri: str
    served_name: str
    revision: str | None

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0] if "://" in self.uri else "path"

    @property
    def claim(self) -> str | None:
        """The PVC of a pvc:// model."""
        return self.uri[len("pvc://") :].split("/", 1)[0] if self.scheme == "pvc" else None

    @property
    def path_in_claim(self) -> str:
        rest = self.uri[len("pvc://") :].split("/", 1)
        return rest[1] if len(rest) > 1 else ""


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class Engine:
    max_model_len: int | None
    dtype: str | None
    tensor_parallel_size: int | None
    gpu_memory_utilization: float | None
    max_num_seqs: int | None
    enforce_eager: bool
    extra_args: tuple[str, ...]


@dataclass(frozen=True)
class Lora:
    enabled: bool
    max_loras: int
    max_rank: int
    allowed_source_roots: tuple[str, ...]
    allow_hub: bool


@dataclass(frozen=True)
class Orca:
    formats: tuple[str, ...]
    grpc_port: int | None
    min_report_interval: str | None


@dataclass(frozen=True)
class ModelCache:
    enabled: bool
    size: str
    storage_class: str | None
    access_mode: str


@dataclass(frozen=True)
class Monitoring:
    service_monitor: bool
    pod_monitor: bool
    interval: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class DeploymentSpec:
    """Everything the builders need about one VLLMDeployment."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    model: ModelSource
    replicas: int
    image: str
    image_pull_policy: str | None
    image_pull_secrets: tuple[str, ...]
    accelerator: str
    gpus: int
    requests: Mapping[str, str]
    limits: Mapping[str, str]
    port: int
    admin_port: int
    engine: Engine
    lora: Lora
    orca: Orca
    api_key: SecretRef | None
    hf_token: SecretRef | None
    model_cache: ModelCache
    env: tuple[Mapping[str, Any], ...]
    pod_labels: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    affinity: Mapping[str, Any] | None
    runtime_class: str | None
    priority_class: str | None
    termination_grace_seconds: int
    pdb_enabled: bool
    pdb_max_unavailable: int | str
    monitoring: Monitoring
    network_policy_enabled: bool
    network_policy_from: tuple[Mapping[str, Any], ...]
    network_policy_metrics_from: tuple[Mapping[str, Any], ...]
    inference_pool: str | None

    @property
    def secrets(self) -> tuple[SecretRef, ...]:
        return tuple(ref for ref in (self.api_key, self.hf_token) if ref is not None)


def quantity(value: Any) -> str:
    """Resource quantities as strings (`nvidia.com/gpu: 1` in a CR is a number; Kubernetes
    clients and some validators want "1")."""
    return str(value)


def _secret(ref: Mapping[str, Any] | None, default_key: str) -> SecretRef | None:
    return SecretRef(ref["name"], ref.get("key", default_key)) if ref else None


def parse_deployment(body: Mapping[str, Any], images: Images) -> DeploymentSpec:
    meta = body["metadata"]
    # Optional objects left out entirely get their fields' defaults too.
    seeded = {**{key: {} for key in _OPTIONAL_OBJECTS}, **(body.get("spec") or {})}
    spec = with_defaults("VLLMDeployment", {"spec": seeded})["spec"]
    model = spec.get("model") or {}
    if not model.get("uri"):
        raise InvalidSpec("spec.model.uri is required")
    uri = model["uri"]
    default_name = uri[len("hf://") :] if uri.startswith("hf://") else meta["name"]
    accelerator = spec["accelerator"]
    resources = spec.get("resources") or {}
    requests = {k: quantity(v) for k, v in (resources.get("requests") or {}).items()}
    limits = {k: quantity(v) for k, v in (resources.get("limits") or {}).items()}
    # GPUs: spec.gpusPerReplica, or nvidia.com/gpu in the resources as in any pod spec.
    in_resources = {requests.pop(GPU_RESOURCE, None), limits.pop(GPU_RESOURCE, None)} - {None}
    if len(in_resources) > 1:
        raise InvalidSpec(f"{GPU_RESOURCE} request and limit differ: {sorted(in_resources)}")
    gpus = spec.get("gpusPerReplica")
    if in_resources:
        (value,) = in_resources
        if not value.isdigit():
            raise InvalidSpec(f"{GPU_RESOURCE} must be a whole number, not {value!r}")
        if gpus is not None and gpus != int(value):
            raise InvalidSpec(f"gpusPerReplica {gpus} and {GPU_RESOURCE} {value} disagree")
        gpus = int(value)
    if gpus is None:
        gpus = 0 if accelerator == CPU else 1
    if accelerator == CPU and gpus:
        raise InvalidSpec("accelerator CPU runs without GPUs: set gpusPerReplica to 0")
    ports = [spec["port"], spec["adminPort"], (spec.get("orca") or {}).get("grpcPort")]
    if len(set(ports)) < len(ports):
        raise InvalidSpec(f"port, adminPort and orca.grpcPort must differ: {ports}")
    engine, lora, orca, cache = spec["engine"], spec["lora"], spec["orca"], spec["modelCache"]
    monitoring, pdb = spec["monitoring"], spec["podDisruptionBudget"]
    network = spec["networkPolicy"]
    grace = spec["terminationGracePeriodSeconds"]
    return DeploymentSpec(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta.get("uid", ""),
        generation=meta.get("generation"),
        model=ModelSource(uri, model.get("servedName") or default_name, model.get("revision")),
        replicas=spec["replicas"],
        image=spec.get("image") or (images.cpu if accelerator == CPU else images.gpu),
        image_pull_policy=spec.get("imagePullPolicy"),
        image_pull_secrets=tuple(s["name"] for s in spec.get("imagePullSecrets") or ()),
        accelerator=accelerator,
        gpus=gpus,
        requests=requests,
        limits=limits,
        port=spec["port"],
        admin_port=spec["adminPort"],
        engine=Engine(
            max_model_len=engine.get("maxModelLen"),
            dtype=engine.get("dtype"),
            tensor_parallel_size=engine.get("tensorParallelSize"),
            gpu_memory_utilization=engine.get("gpuMemoryUtilization"),
            max_num_seqs=engine.get("maxNumSeqs"),
            enforce_eager=bool(engine.get("enforceEager", False)),
            extra_args=tuple(engine.get("extraArgs") or ()),
        ),
        lora=Lora(
            enabled=lora["enabled"],
            max_loras=lora["maxLoras"],
            max_rank=lora["maxRank"],
            allowed_source_roots=tuple(lora.get("allowedSourceRoots") or ()),
            allow_hub=lora["allowHub"],
        ),
        orca=Orca(
            formats=tuple(orca.get("formats") or ()),
            grpc_port=orca.get("grpcPort"),
            min_report_interval=orca.get("minReportInterval"),
        ),
        api_key=_secret(spec.get("apiKeySecret"), "api-key"),
        hf_token=_secret(spec.get("hfTokenSecret"), "token"),
        model_cache=ModelCache(
            enabled=cache["enabled"],
            size=cache["size"],
            storage_class=cache.get("storageClassName"),
            access_mode=cache["accessMode"],
        ),
        env=tuple(spec.get("env") or ()),
        pod_labels=dict(spec.get("podLabels") or {}),
        pod_annotations=dict(spec.get("podAnnotations") or {}),
        node_selector=dict(spec.get("nodeSelector") or {}),
        tolerations=tuple(spec.get("tolerations") or ()),
        affinity=spec.get("affinity"),
        runtime_class=spec.get("runtimeClassName"),
        priority_class=spec.get("priorityClassName"),
        termination_grace_seconds=grace,
        pdb_enabled=pdb["enabled"],
        pdb_max_unavailable=pdb.get("maxUnavailable", 1),
        monitoring=Monitoring(
            service_monitor=monitoring["serviceMonitor"],
            pod_monitor=monitoring["podMonitor"],
            interval=monitoring["interval"],
            labels=dict(monitoring.get("labels") or {}),
        ),
        network_policy_enabled=network["enabled"],
        network_policy_from=tuple(network.get("from") or ()),
        network_policy_metrics_from=tuple(network.get("metricsFrom") or ()),
        inference_pool=(spec.get("inferencePool") or {}).get("name"),
    )
