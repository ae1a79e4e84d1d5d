"""VLLMDeployment objects parsed into frozen dataclasses: the one place that reads the CR's spec.

The API server already validated the object against the CRD schema and its CEL rules; parsing
applies the schema's defaults again (objects stored before a default existed, or API servers
that did not apply them) and checks what the schema cannot express.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .schema import with_defaults

CPU, GPU = "CPU", "GPU"
GPU_RESOURCE = "nvidia.com/gpu"
_OPTIONAL_OBJECTS = (
    "engine", "lora", "orca", "modelCache", "monitoring", "podDisruptionBudget", "networkPolicy",
)  # fmt: skip

# The CRD's rules, again (objects stored before a rule existed; API servers that skip CEL):
# each is also in charts/vllm/crds/vllmdeployments.serving.vllm.ai.yaml, tests keep them equal.
# metadata.name names the Service (a DNS-1035 label) and is a label value on every child.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME = 63
# A multi-node deployment's name names its LeaderWorkerSet, whose workers' StatefulSets are
# NAME-<group> (groups up to 1999: 1000 replicas and as many surging) and carry a revision label
# NAME-<group>-<10 characters> (63 at most).
MAX_GROUP_NAME = 47
MASTER_PORT = 29500  # torch.distributed's rendezvous, on the leader of a multi-node replica
PARALLELISM_BOUNDS = {"tensor": 1024, "pipeline": 64, "nodes": 64}  # the CRD's maximums
MAX_POOL_NAME = 253  # spec.inferencePool.name names an InferencePool: a DNS subdomain
# A sane fleet for one model: far above any real one, far below what a typo (replicas: 100000)
# would do to the scheduler, the API server and the operator, which calls every pod's admin port.
MAX_REPLICAS = 1000
MAX_GPUS = 16  # gpusPerReplica's maximum, for nvidia.com/gpu in the resources too
# vllm-ext-serve's --orca-oob-min-interval: seconds, above 0 and below a day.
MAX_REPORT_INTERVAL = 86400
_INTERVAL = re.compile(r"[0-9]+(\.[0-9]+)?")
# A label value (Kubernetes' syntax, at most 63 characters) and a label or annotation key: an
# optional DNS subdomain prefix and a name.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)
_KEY_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

# Flags the operator sets (builders.server_args) or keeps unset (the API key comes from a
# Secret; a root path, a socket, a middleware or a config file would break the probes, the admin
# port or the flags above), in every spelling `vllm serve` takes: `--flag value`,
# `--flag=value`, `--flag.key value` (JSON), underscores for dashes, and any prefix (vLLM's
# parser takes unambiguous abbreviations, `--root-pa`). `--admin-*` (the admin port and the
# operator's token key), `--log-format`, `--lora-allowed-roots` (which extraArgs could widen) and
# `--orca-*` are vllm-ext-serve's.
MANAGED_FLAGS = (
    "--model", "--served-model-name", "--host", "--port", "--uds", "--root-path",
    "--api-key", "--middleware", "--config", "--revision",
    "--max-model-len", "--dtype", "--tensor-parallel-size", "-tp", "--gpu-memory-utilization",
    "--device-memory-utilization", "--max-num-seqs", "--enforce-eager", "--no-enforce-eager",
    "--shutdown-timeout", "--enable-lora", "--no-enable-lora", "--max-loras", "--max-lora-rank",
    "--admin-*", "--log-format", "--lora-allowed-roots", "--orca-*",
    "--pipeline-parallel-size", "-pp", "--nnodes", "-n", "--node-rank", "-r", "--master-addr",
    "--master-port", "--headless", "--distributed-executor-backend",
)  # fmt: skip


def _prefix_trie(words: Iterable[str], dash: str) -> str:
    """A regex matching every non-empty prefix of `words` (`*` ends a word with any name)."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})

    def alternatives(node: dict[str, Any]) -> str:
        branches = []
        for char, child in sorted(node.items()):
            atom = {"-": dash, "*": "[^=.]*"}.get(char, re.escape(char))
            rest = alternatives(child)
            branches.append(f"{atom}({rest})?" if rest else atom)
        if len(branches) < 2:
            return "".join(branches)
        return f"({'|'.join(branches)})"

    return alternatives(trie)


# An extraArgs item that sets (or abbreviates) a managed flag; the CRD's rule holds this text.
EXTRA_ARG_PATTERN = (
    "(?s)^(--"
    + _prefix_trie((f[2:] for f in MANAGED_FLAGS if f.startswith("--")), "[-_]")
    + "|-"
    + _prefix_trie((f[1:] for f in MANAGED_FLAGS if not f.startswith("--")), "-")
    # A one-letter short flag also takes its value attached (`-n1`, as argparse reads it).
    + "|-["
    + "".join(sorted(f[1] for f in MANAGED_FLAGS if len(f) == 2 and f[1] != "-"))
    + "].*"
    + ")([=.].*)?$"
)
# CEL's regexes are RE2's, whose `$` is the end of the text; Python's `$` also matches before a
# final newline, `\Z` does not.
_MANAGED_ARG = re.compile(EXTRA_ARG_PATTERN.removesuffix("$") + r"\Z")


class InvalidSpec(ValueError):
    """A spec the schema let through but the operator cannot act on."""


@dataclass(frozen=True)
class Images:
    """The operator's default server images (per accelerator)."""

    gpu: str
    cpu: str


# spec.model.uri's forms, each also a rule of the CRD (tests keep them equal): hf://ORG/NAME;
# pvc://CLAIM/PATH; s3://BUCKET/PREFIX, a bucket name as S3 takes it (3 to 63 lowercase letters,
# digits, '.' and '-', a letter or digit at both ends) and a prefix of path segments, none of them
# `.` or `..` (the server caches the files under $HF_HOME/s3/BUCKET/PREFIX); oci://REGISTRY/REPO
# and a tag or a digest (or neither: latest), the registry a host with a dot (or localhost), a
# port or none, so that no container runtime takes its first part for a user of Docker Hub.
HF_URI_PATTERN = r"^hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
PVC_URI_PATTERN = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?$"
S3_URI_PATTERN = r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/[-A-Za-z0-9_.+=,@:~]+)*/?$"
DOT_SEGMENT_PATTERN = "/[.][.]?(/|$)"
OCI_URI_PATTERN = (
    r"^oci://(localhost|[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)+)"
    r"(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})?$"
)
URI_SCHEMES = ("hf://", "s3://", "oci://", "pvc://")
_URI_FORMS = {
    "hf": (HF_URI_PATTERN, "an hf:// model URI is hf://ORG/NAME"),
    "pvc": (PVC_URI_PATTERN, "a pvc:// model URI needs a claim name: pvc://CLAIM/PATH"),
    "s3": (
        S3_URI_PATTERN,
        "an s3:// model URI is s3://BUCKET/PREFIX: a bucket name of 3 to 63 lowercase letters, "
        "digits, '.' and '-' (a letter or digit at both ends), a prefix of letters, digits and "
        "-_.+=,@:~ without '.' or '..' segments",
    ),
    "oci": (
        OCI_URI_PATTERN,
        "an oci:// model URI is oci://REGISTRY/REPO[:TAG|@sha256:DIGEST], the registry a host "
        "name with a dot (or localhost) and an optional port, the repository in lowercase",
    ),
}
# spec.model.s3: an http or https URL (a host name or a bracketed IPv6 address, a port, a path),
# and a region name as S3-compatible stores spell them.
S3_ENDPOINT_PATTERN = (
    r"^https?://([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"
    r"(/[-A-Za-z0-9._~/]*)?$"
)
S3_REGION_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,62}[A-Za-z0-9])?$"


@dataclass(frozen=True)
class S3Store:
    """spec.model.s3: where an s3:// model's store is (None: AWS's S3 and its defaults) and
    the Secret of its credentials (None: anonymous)."""

    endpoint: str | None
    region: str | None
    credentials_secret: str | None


@dataclass(frozen=True)
class ModelSource:
    uri: str
    served_name: str
    revision: str | None
    s3: S3Store | None = None

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0] if "://" in self.uri else "path"

    @property
    def image(self) -> str | None:
        """The image reference of an oci:// model (its files at the image's root)."""
        return self.uri[len("oci://") :] if self.scheme == "oci" else None

    @property
    def mounted(self) -> bool:
        """Whether the pods mount the model at /models: a pvc:// model's claim, an oci:// one's
        image."""
        return self.scheme in ("pvc", "oci")

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
class Parallelism:
    """How one replica splits the model: tensor x pipeline vLLM workers over `nodes` pods."""

    tensor: int = 1
    pipeline: int = 1
    nodes: int = 1

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1


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
class Rollout:
    """The Deployment's rolling update: how many pods above `replicas` (`max_surge`) and below
    it (`max_unavailable`) an update may make, each a count or a percentage."""

    max_surge: int | str
    max_unavailable: int | str


# Rolling updates that need no spare accelerator: a GPU pod is replaced in place (one down, none
# added), as a full node cannot schedule a surge pod; a CPU pod surges (a quarter more), none
# down, so the update costs no capacity.
GPU_ROLLOUT = Rollout(max_surge=0, max_unavailable=1)
CPU_ROLLOUT = Rollout(max_surge="25%", max_unavailable=0)
PERCENT_PATTERN = r"^(100|[1-9]?[0-9])%$"
_PERCENT = re.compile(PERCENT_PATTERN)
# spec.startupTimeout: hours, minutes and seconds, each present at most once and above 0
# (`2h`, `90m`, `1h30m`, `45s`); the CRD holds the same pattern.
DURATION_PATTERN = r"^([1-9][0-9]{0,4}h)?([1-9][0-9]{0,5}m)?([1-9][0-9]{0,6}s)?$"
_DURATION = re.compile(DURATION_PATTERN)
# The Deployment's progressDeadlineSeconds: Kubernetes' own "no progress" verdict must never
# come before ours (a load of hours is progress): far after spec.startupTimeout, or never.
PROGRESS_DEADLINE_MARGIN = 600
NO_PROGRESS_DEADLINE = 2**31 - 1  # the field is an int32


def _is_zero(value: int | str) -> bool:
    return str(value) in ("0", "0%")


def _step(field: str, value: Any) -> int | str:
    """A count or percentage of pods, as Kubernetes' intstr takes it."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidSpec(f"{field} must be a count or a percentage, not {value!r}")
    if isinstance(value, int) and value < 0:
        raise InvalidSpec(f"{field} must not be negative: {value}")
    if isinstance(value, str) and not _PERCENT.fullmatch(value):
        raise InvalidSpec(f"{field} must be a count or a percentage from 0% to 100%: {value!r}")
    return value


def _rollout(given: Mapping[str, Any], accelerator: str) -> Rollout:
    default = CPU_ROLLOUT if accelerator == CPU else GPU_ROLLOUT
    surge = _step("rollout.maxSurge", given.get("maxSurge", default.max_surge))
    unavailable = _step(
        "rollout.maxUnavailable", given.get("maxUnavailable", default.max_unavailable)
    )
    if _is_zero(surge) and _is_zero(unavailable):
        raise InvalidSpec(
            "rollout.maxSurge and rollout.maxUnavailable cannot both be 0, or no pod could be "
            f"replaced (with accelerator {accelerator}, maxSurge defaults to "
            f"{default.max_surge} and maxUnavailable to {default.max_unavailable})"
        )
    return Rollout(surge, unavailable)


def duration_seconds(text: str) -> int:
    """Seconds in `2h`, `90m`, `1h30m`, `45s` (DURATION_PATTERN); InvalidSpec otherwise."""
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise InvalidSpec(
            f"startupTimeout {text!r} is not a duration such as 2h, 90m, 1h30m or 45s"
        )
    hours, minutes, seconds = (int(g[:-1]) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class Monitoring:
    service_monitor: bool
    pod_monitor: bool
    interval: str
    labels: Mapping[str, str]


# spec.autoscaling's targets: the CRD field, and what a replica should carry of its signal.
AUTOSCALING_TARGETS = (
    "ttftSeconds", "tokensWaitingPerReplica", "kvCacheUsage", "requestsWaitingPerReplica",
)  # fmt: skip


@dataclass(frozen=True)
class ScaleFromZero:
    """spec.autoscaling.scaleFromZero: KEDA's HTTP add-on holding requests at zero replicas."""

    hosts: tuple[str, ...]
    cold_start_timeout: str  # a Go duration (15m)
    concurrency_per_replica: int


@dataclass(frozen=True)
class Autoscaling:
    """spec.autoscaling: replicas between `min_replicas` and `max_replicas` such that each
    carries `value` of the `target` signal (a time to first token, for ttftSeconds)."""

    min_replicas: int
    max_replicas: int
    target: str  # one of AUTOSCALING_TARGETS
    value: float
    scale_down_stabilization_seconds: int
    prometheus_address: str | None
    scale_from_zero: ScaleFromZero


@dataclass(frozen=True)
class InferencePool:
    """spec.inferencePool: a Gateway API Inference Extension InferencePool
    (`inference.networking.k8s.io/v1`) over the deployment's pods, on the API port."""

    name: str
    # As given, in GIE v1's own field names (group, kind, name, port.number, failureMode): GIE's
    # CRD defaults what is left out.
    endpoint_picker_ref: Mapping[str, Any] | None


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
    rollout: Rollout
    startup_timeout_seconds: int | None  # a replica starting for longer is Degraded
    monitoring: Monitoring
    network_policy_enabled: bool
    network_policy_from: tuple[Mapping[str, Any], ...]
    network_policy_metrics_from: tuple[Mapping[str, Any], ...]
    inference_pool: InferencePool | None
    # The pod's and the server container's securityContext: spec.podSecurityContext and
    # spec.securityContext merged over POD_SECURITY_CONTEXT and CONTAINER_SECURITY_CONTEXT.
    pod_security_context: Mapping[str, Any]
    security_context: Mapping[str, Any]
    shm_size: str  # the sizeLimit of /dev/shm (memory)
    volumes: tuple[Mapping[str, Any], ...]  # extra volumes and the server's mounts of them
    volume_mounts: tuple[Mapping[str, Any], ...]
    topology_spread: tuple[Mapping[str, Any], ...]
    scheduler_name: str | None
    autoscaling: Autoscaling | None = None
    parallelism: Parallelism = Parallelism()


def quantity(value: Any) -> str:
    """Resource quantities as strings (`nvidia.com/gpu: 1` in a CR is a number; Kubernetes
    clients and some validators want "1")."""
    return str(value)


def _secret(ref: Mapping[str, Any] | None, default_key: str) -> SecretRef | None:
    return SecretRef(ref["name"], ref.get("key", default_key)) if ref else None


def _label_key_error(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if len(name) > 63 or not _KEY_NAME.fullmatch(name):
        return "its name must be 1 to 63 letters, digits, '-', '_' or '.', alphanumeric at the ends"
    if "/" in key and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "its prefix must be a DNS subdomain"
    return None


def _check_labels(field: str, labels: Mapping[str, Any], *, values: bool = True) -> None:
    for key, value in labels.items():
        if (error := _label_key_error(key)) is not None:
            raise InvalidSpec(f"{field}: key {key!r} is not a label key: {error}")
        if values and not (
            isinstance(value, str) and len(value) <= 63 and _LABEL_VALUE.fullmatch(value)
        ):
            raise InvalidSpec(
                f"{field}: {key}={value!r} is not a label value (at most 63 letters, digits, "
                "'-', '_' or '.', alphanumeric at both ends)"
            )


def _check(name: str, spec: Mapping[str, Any]) -> None:
    """What the CRD's rules refuse, and what they cannot express (label keys)."""
    if len(name) > MAX_NAME or not re.fullmatch(NAME_PATTERN, name):
        raise InvalidSpec(
            f"metadata.name {name!r} cannot name the Service: at most {MAX_NAME} lowercase "
            "letters, digits and '-', starting with a letter and not ending with '-'"
        )
    if spec["replicas"] > MAX_REPLICAS:
        raise InvalidSpec(f"replicas {spec['replicas']} is above the maximum, {MAX_REPLICAS}")
    for arg in spec["engine"].get("extraArgs") or ():
        if _MANAGED_ARG.match(arg):
            raise InvalidSpec(
                f"engine.extraArgs must not set a flag the operator manages: {arg[:80]!r} "
                "(set it through the spec's own fields)"
            )
    interval = spec["orca"].get("minReportInterval")
    if interval is not None and not (
        _INTERVAL.fullmatch(interval) and 0 < float(interval) < MAX_REPORT_INTERVAL
    ):
        raise InvalidSpec(
            f"orca.minReportInterval {interval!r} must be seconds above 0 and below "
            f"{MAX_REPORT_INTERVAL}"
        )
    _check_labels("podLabels", spec.get("podLabels") or {})
    _check_labels("nodeSelector", spec.get("nodeSelector") or {})
    _check_labels("monitoring.labels", spec["monitoring"].get("labels") or {})
    _check_labels("podAnnotations", spec.get("podAnnotations") or {}, values=False)


def _matches(pattern: str, text: str) -> bool:
    """`text` matches the CRD's `pattern` as CEL (RE2) reads it: its `$` ends the text."""
    return re.search(pattern.removesuffix("$") + r"\Z", text) is not None


def _model_source(uri: str, s3: Mapping[str, Any] | None) -> S3Store | None:
    """The CRD's rules on spec.model, again: the URI's form, and an s3 block only with an s3://
    URI. Returns the store of an s3:// model (its endpoint and credentials), None for others."""
    if not uri.startswith((*URI_SCHEMES, "/")):
        raise InvalidSpec(
            "model.uri must start with hf://, s3://, oci://, pvc:// or / (a path in the image)"
        )
    scheme = uri.split("://", 1)[0]
    if scheme in _URI_FORMS:
        pattern, message = _URI_FORMS[scheme]
        dots = scheme == "s3" and re.search(DOT_SEGMENT_PATTERN, uri) is not None
        if dots or not _matches(pattern, uri):
            raise InvalidSpec(f"{message}, not {uri[:120]!r}")
    if s3 is None:
        return S3Store(None, None, None) if scheme == "s3" else None
    if scheme != "s3":
        raise InvalidSpec("model.s3 goes with an s3:// model URI")
    endpoint, region = s3.get("endpoint"), s3.get("region")
    if endpoint is not None and not _matches(S3_ENDPOINT_PATTERN, endpoint):
        raise InvalidSpec(
            f"model.s3.endpoint must be an http:// or https:// URL, not {endpoint[:120]!r}"
        )
    if region is not None and not _matches(S3_REGION_PATTERN, region):
        raise InvalidSpec(f"model.s3.region {region[:80]!r} is not a region name")
    return S3Store(endpoint, region, (s3.get("credentialsSecret") or {}).get("name"))


def _parallelism(
    given: Mapping[str, Any] | None, engine_tensor: int | None, accelerator: str, gpus: int
) -> Parallelism:
    """spec.parallelism with its defaults, and the CRD's rules again: tensor x pipeline within
    the pod's GPUs on one node, equal to all the group's GPUs across nodes."""
    given = given or {}
    if "tensor" in given and engine_tensor is not None:
        raise InvalidSpec("set parallelism.tensor or engine.tensorParallelSize, not both")
    parallelism = Parallelism(
        tensor=given.get("tensor", engine_tensor or 1),
        pipeline=given.get("pipeline", 1),
        nodes=given.get("nodes", 1),
    )
    for field, top in PARALLELISM_BOUNDS.items():
        value = getattr(parallelism, field)
        if not 1 <= value <= top:  # the schema's bounds (a stored object predating them)
            raise InvalidSpec(f"parallelism.{field} {value} must be from 1 to {top}")
    world = parallelism.tensor * parallelism.pipeline
    sizes = f"parallelism.tensor {parallelism.tensor} x pipeline {parallelism.pipeline}"
    if not parallelism.multi_node:
        if accelerator != CPU and world > gpus:
            raise InvalidSpec(f"on one node, {sizes} exceeds the {gpus} GPUs per pod")
    elif accelerator == CPU:
        if world % parallelism.nodes:
            raise InvalidSpec(f"{sizes} is not a multiple of the {parallelism.nodes} nodes")
    elif world != parallelism.nodes * gpus:
        raise InvalidSpec(
            f"{sizes} must equal parallelism.nodes {parallelism.nodes} x the {gpus} GPUs per pod"
        )
    return parallelism


def _check_group(name: str, spec: Mapping[str, Any]) -> None:
    """What a multi-node replica needs besides its split (the CRD's rules, again)."""
    if len(name) > MAX_GROUP_NAME:
        raise InvalidSpec(
            f"with parallelism.nodes above 1, metadata.name must be at most {MAX_GROUP_NAME} "
            "characters: it names the LeaderWorkerSet, whose StatefulSets and their revision "
            "labels add up to 16"
        )
    cache = spec["modelCache"]
    if cache["enabled"] and cache["accessMode"] == "ReadWriteOnce":
        raise InvalidSpec(
            "with parallelism.nodes above 1, modelCache.accessMode must be ReadWriteMany: a "
            "group's pods run on several nodes, and a ReadWriteOnce volume mounts on one"
        )
    ports = {"port": spec["port"], "adminPort": spec["adminPort"]}
    ports["orca.grpcPort"] = (spec.get("orca") or {}).get("grpcPort")
    for field, port in ports.items():
        if port == MASTER_PORT:
            raise InvalidSpec(
                f"with parallelism.nodes above 1, {field} cannot be {MASTER_PORT}: the group's "
                "rendezvous takes it on the leader"
            )


def _autoscaling(name: str, namespace: str, given: Mapping[str, Any] | None) -> Autoscaling | None:
    """spec.autoscaling, with the CRD's rules again (exactly one target, min <= max)."""
    if given is None:
        return None
    targets = [t for t in AUTOSCALING_TARGETS if given.get(t) is not None]
    if len(targets) != 1:
        raise InvalidSpec(
            f"autoscaling: set exactly one target of {', '.join(AUTOSCALING_TARGETS)} "
            f"(found {', '.join(targets) or 'none'})"
        )
    (target,) = targets
    zero = given.get("scaleFromZero") or {}
    low, high = given.get("minReplicas", 1), given["maxReplicas"]
    if low > high:
        raise InvalidSpec(f"autoscaling.minReplicas {low} cannot exceed maxReplicas {high}")
    value = float(given[target])
    if not value > 0:
        raise InvalidSpec(f"autoscaling.{target} must be above 0, not {given[target]!r}")
    return Autoscaling(
        min_replicas=low,
        max_replicas=high,
        target=target,
        value=value,
        scale_down_stabilization_seconds=given.get("scaleDownStabilizationSeconds", 300),
        prometheus_address=(given.get("prometheus") or {}).get("address"),
        scale_from_zero=ScaleFromZero(
            hosts=tuple(zero.get("hosts") or (f"{name}.{namespace}",)),
            cold_start_timeout=zero.get("coldStartTimeout", "15m"),
            concurrency_per_replica=zero.get("concurrencyPerReplica", 1000),
        ),
    )


def _inference_pool(name: str, pool: Mapping[str, Any] | None) -> InferencePool | None:
    """spec.inferencePool, with the CRD's rules again: the pool's name is an object name (a DNS
    subdomain); an endpoint picker that is a Service (GIE's default kind) needs its port."""
    if pool is None:
        return None
    pool_name = pool.get("name") or name
    if len(pool_name) > MAX_POOL_NAME or not _DNS_SUBDOMAIN.fullmatch(pool_name):
        raise InvalidSpec(
            f"inferencePool.name {pool_name!r} cannot name an InferencePool: at most "
            f"{MAX_POOL_NAME} lowercase letters, digits, '-' and '.' (a DNS subdomain)"
        )
    ref = pool.get("endpointPickerRef")
    if ref is not None and ref.get("kind", "Service") == "Service" and "port" not in ref:
        raise InvalidSpec(
            "inferencePool.endpointPickerRef.port is required when kind is Service (the default)"
        )
    return InferencePool(pool_name, copy.deepcopy(dict(ref)) if ref is not None else None)


# --- the pods: security, volumes, placement -------------------------------------------------------

# The server images' own non-root user (images/server/Dockerfile*), whose UID and GID the pods
# run as unless spec.podSecurityContext says otherwise: above 10000, so no user of a host.
SERVER_UID = 65532
# What spec.podSecurityContext and spec.securityContext are merged over, field by field (a field
# given replaces the default's whole value): Pod Security's "restricted" profile, a read-only
# root filesystem (the builders mount writable volumes where vLLM writes), volumes writable by
# the pods' group (fsGroup), changed only when a volume's root has another group (a large model
# cache is not walked at every start).
POD_SECURITY_CONTEXT: Mapping[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": SERVER_UID,
    "runAsGroup": SERVER_UID,
    "fsGroup": SERVER_UID,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Where the platform assigns UIDs (Settings.platform_assigns_uids), the defaults name none.
ASSIGNED_ID_FIELDS = ("runAsUser", "runAsGroup", "fsGroup")
CONTAINER_SECURITY_CONTEXT: Mapping[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}
# The pods' own volumes and mount paths (builders.py), which spec.volumes and spec.volumeMounts
# must leave alone: a second volume of one of these names is refused by the API server, a mount
# at one of these paths or above one (/dev hides the devices) breaks the server. /models holds
# the model's claim or image, so it is the operator's only for pvc:// and oci:// models. The
# CRD's rules hold the same lists (tests keep them equal).
OWN_VOLUMES = ("dshm", "cache", "model", "tmp", "home")
OWN_MOUNT_PATHS = ("/dev", "/dev/shm", "/cache", "/tmp", "/home", "/home/vllm")
MODEL_MOUNT_PATH = "/models"
# Absolute mount paths and relative sub-paths (and localhost profiles) without `.` or `..`
# components (those would reach the paths above, or out of the volume).
PATH_PART = "[-A-Za-z0-9_.@+~,=]+"
MOUNT_PATH_PATTERN = f"^(/{PATH_PART})+$"
RELATIVE_PATH_PATTERN = f"^{PATH_PART}(/{PATH_PART})*$"
_MOUNT_PATH = re.compile(MOUNT_PATH_PATTERN)
_RELATIVE_PATH = re.compile(RELATIVE_PATH_PATTERN)


def _dots(path: str) -> bool:
    return any(part in (".", "..") for part in path.split("/"))


def _security_context(
    field: str, given: Mapping[str, Any] | None, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """`given` over `defaults`, field by field; the CRD's rules on profiles, again."""
    merged = {**copy.deepcopy(dict(defaults)), **copy.deepcopy(dict(given or {}))}
    for key in ("seccompProfile", "appArmorProfile"):
        profile = merged.get(key)
        if profile is None:
            continue
        local = profile.get("localhostProfile")
        if (profile.get("type") == "Localhost") != (local is not None):
            raise InvalidSpec(
                f"{field}.{key}: localhostProfile goes with type Localhost, and only with it"
            )
        if local is not None and (not _RELATIVE_PATH.fullmatch(local) or _dots(local)):
            raise InvalidSpec(
                f"{field}.{key}.localhostProfile {local!r} must be a relative path without '.' "
                "or '..'"
            )
    return merged


def _check_security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
    """What the API server or the kubelet would refuse of the merged security contexts."""
    if container.get("privileged") and container.get("allowPrivilegeEscalation") is not True:
        raise InvalidSpec(
            "securityContext.privileged needs allowPrivilegeEscalation: true (it defaults to false)"
        )
    non_root = container.get("runAsNonRoot", pod.get("runAsNonRoot"))
    if non_root and container.get("runAsUser", pod.get("runAsUser")) == 0:
        raise InvalidSpec(
            "runAsUser 0 is root, which runAsNonRoot (true by default) refuses: set "
            "runAsNonRoot to false too"
        )


def _check_volumes(
    volumes: tuple[Mapping[str, Any], ...],
    mounts: tuple[Mapping[str, Any], ...],
    model_mounted: bool,
) -> None:
    names = [volume["name"] for volume in volumes]
    for name in names:
        if name in OWN_VOLUMES:
            raise InvalidSpec(
                f"volumes: {name!r} is the name of one of the operator's volumes "
                f"({', '.join(OWN_VOLUMES)})"
            )
        if names.count(name) > 1:
            raise InvalidSpec(f"volumes: two volumes are named {name!r}")
    reserved = OWN_MOUNT_PATHS + ((MODEL_MOUNT_PATH,) if model_mounted else ())
    paths = [mount["mountPath"] for mount in mounts]
    for mount in mounts:
        path, sub = mount["mountPath"], mount.get("subPath")
        if not _MOUNT_PATH.fullmatch(path) or _dots(path):
            raise InvalidSpec(
                f"volumeMounts: mountPath {path!r} must be an absolute path without '.' or '..'"
            )
        if path in reserved:
            raise InvalidSpec(
                f"volumeMounts: mountPath {path} is the operator's (or above one of its mounts: "
                f"{', '.join(reserved)})"
            )
        if paths.count(path) > 1:
            raise InvalidSpec(f"volumeMounts: two mounts at {path}")
        if mount["name"] not in names:
            raise InvalidSpec(f"volumeMounts: {mount['name']!r} names no volume of spec.volumes")
        if sub is not None and (not _RELATIVE_PATH.fullmatch(sub) or _dots(sub)):
            raise InvalidSpec(
                f"volumeMounts: subPath {sub!r} must be a relative path without '.' or '..'"
            )


def _topology_spread(constraints: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    seen: set[tuple[str, str]] = set()
    for constraint in constraints:
        key, when = constraint["topologyKey"], constraint["whenUnsatisfiable"]
        if (error := _label_key_error(key)) is not None:
            raise InvalidSpec(
                f"topologySpreadConstraints: topologyKey {key!r} is not a label key: {error}"
            )
        if (key, when) in seen:
            raise InvalidSpec(
                f"topologySpreadConstraints: two constraints of topologyKey {key} and "
                f"whenUnsatisfiable {when}"
            )
        seen.add((key, when))
        if "minDomains" in constraint and when != "DoNotSchedule":
            raise InvalidSpec(
                "topologySpreadConstraints: minDomains goes with whenUnsatisfiable DoNotSchedule"
            )
    return tuple(copy.deepcopy(dict(c)) for c in constraints)


def _whole_number(value: str) -> int:
    """A GPU count: ASCII digits only (`str.isdigit` takes "²", which `int` refuses), and few
    of them (`int` refuses more than 4300 digits, and no count has more than MAX_GPUS's)."""
    if not (value.isascii() and value.isdecimal()):
        raise InvalidSpec(f"{GPU_RESOURCE} must be a whole number, not {value[:40]!r}")
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(MAX_GPUS)):
        raise InvalidSpec(f"{GPU_RESOURCE} {digits[:20]}... is above the maximum, {MAX_GPUS}")
    return int(digits)


def parse_deployment(
    body: Mapping[str, Any], images: Images, *, platform_assigns_uids: bool = False
) -> DeploymentSpec:
    meta = body["metadata"]
    # Optional objects left out entirely get their fields' defaults too.
    seeded = {**{key: {} for key in _OPTIONAL_OBJECTS}, **(body.get("spec") or {})}
    spec = with_defaults("VLLMDeployment", {"spec": seeded})["spec"]
    model = spec.get("model") or {}
    if not model.get("uri"):
        raise InvalidSpec("spec.model.uri is required")
    uri = model["uri"]
    s3 = _model_source(uri, model.get("s3"))
    if model.get("revision") and uri.startswith("s3://"):
        raise InvalidSpec(
            "model.revision does not go with an s3:// model URI (a prefix has no revisions)"
        )
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
        count = _whole_number(value)
        if gpus is not None and gpus != count:
            raise InvalidSpec(f"gpusPerReplica {gpus} and {GPU_RESOURCE} {value} disagree")
        if count > MAX_GPUS:
            raise InvalidSpec(f"{GPU_RESOURCE} {count} is above the maximum, {MAX_GPUS}")
        gpus = count
    if gpus is None:
        gpus = 0 if accelerator == CPU else 1
    if accelerator == CPU and gpus:
        raise InvalidSpec("accelerator CPU runs without GPUs: set gpusPerReplica to 0")
    if accelerator != CPU and not gpus:
        raise InvalidSpec(f"accelerator GPU needs at least 1 GPU ({GPU_RESOURCE} is 0)")
    parallel = (spec.get("engine") or {}).get("tensorParallelSize")
    if accelerator != CPU and parallel is not None and parallel > gpus:
        raise InvalidSpec(
            f"engine.tensorParallelSize {parallel} exceeds the {gpus} GPUs per replica"
        )
    parallelism = _parallelism(spec.get("parallelism"), parallel, accelerator, gpus)
    if parallelism.multi_node:
        _check_group(meta["name"], spec)
    _check(meta["name"], spec)
    pod_defaults = POD_SECURITY_CONTEXT
    if platform_assigns_uids:
        pod_defaults = {k: v for k, v in pod_defaults.items() if k not in ASSIGNED_ID_FIELDS}
    pod_security = _security_context(
        "podSecurityContext", spec.get("podSecurityContext"), pod_defaults
    )
    security = _security_context(
        "securityContext", spec.get("securityContext"), CONTAINER_SECURITY_CONTEXT
    )
    _check_security(pod_security, security)
    volumes = tuple(copy.deepcopy(dict(v)) for v in spec.get("volumes") or ())
    mounts = tuple(copy.deepcopy(dict(m)) for m in spec.get("volumeMounts") or ())
    _check_volumes(volumes, mounts, ModelSource(uri, "", None).mounted)
    ports = [spec["port"], spec["adminPort"], (spec.get("orca") or {}).get("grpcPort")]
    if len(set(ports)) < len(ports):
        raise InvalidSpec(f"port, adminPort and orca.grpcPort must differ: {ports}")
    engine, lora, orca, cache = spec["engine"], spec["lora"], spec["orca"], spec["modelCache"]
    monitoring, pdb = spec["monitoring"], spec["podDisruptionBudget"]
    network = spec["networkPolicy"]
    grace = spec["terminationGracePeriodSeconds"]
    rollout = _rollout(spec.get("rollout") or {}, accelerator)
    timeout = spec.get("startupTimeout")
    return DeploymentSpec(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta.get("uid", ""),
        generation=meta.get("generation"),
        model=ModelSource(uri, model.get("servedName") or default_name, model.get("revision"), s3),
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
            size=quantity(cache["size"]),
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
        # As many pods as a rollout takes down at once may be evicted at once (at least one).
        pdb_max_unavailable=pdb.get(
            "maxUnavailable",
            1 if _is_zero(rollout.max_unavailable) else rollout.max_unavailable,
        ),
        rollout=rollout,
        startup_timeout_seconds=duration_seconds(timeout) if timeout is not None else None,
        monitoring=Monitoring(
            service_monitor=monitoring["serviceMonitor"],
            pod_monitor=monitoring["podMonitor"],
            interval=monitoring["interval"],
            labels=dict(monitoring.get("labels") or {}),
        ),
        network_policy_enabled=network["enabled"],
        network_policy_from=tuple(network.get("from") or ()),
        network_policy_metrics_from=tuple(network.get("metricsFrom") or ()),
        inference_pool=_inference_pool(meta["name"], spec.get("inferencePool")),
        autoscaling=_autoscaling(meta["name"], meta["namespace"], spec.get("autoscaling")),
        pod_security_context=pod_security,
        security_context=security,
        shm_size=spec["shmSize"],
        volumes=volumes,
        volume_mounts=mounts,
        topology_spread=_topology_spread(spec.get("topologySpreadConstraints") or ()),
        scheduler_name=spec.get("schedulerName"),
        parallelism=parallelism,
    )
