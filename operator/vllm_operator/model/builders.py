"""Pure builders: a `DeploymentSpec` in, the Kubernetes objects that serve it out (plain dicts).

No clock, no randomness, no API calls: the same spec always gives the same objects, so the
reconciler can apply them every time and the tests can compare them to golden files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from copy import deepcopy
from typing import Any

from .. import API_VERSION, GROUP, MANAGER
from .spec import (
    CPU,
    MASTER_PORT,
    NO_PROGRESS_DEADLINE,
    PROGRESS_DEADLINE_MARGIN,
    DeploymentSpec,
    S3Store,
)

ADAPTERS_LOADED = f"{GROUP}/adapters-loaded"  # the readiness gate of LoRA-serving pods
DEPLOYMENT_LABEL = f"{GROUP}/deployment"
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "vllm-operator"}
INFERENCE_POOL_API_VERSION = "inference.networking.k8s.io/v1"  # Gateway API Inference Extension
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"  # kubernetes-sigs/lws
# What LeaderWorkerSet's controller and webhook put on a group's pods: the set's name, and the
# address of the group's leader and the pod's index in its group (0: the leader) as variables.
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_LEADER_ADDRESS = "$(LWS_LEADER_ADDRESS)"
LWS_WORKER_INDEX = "$(LWS_WORKER_INDEX)"
ADMIN_PORT_NAME = "admin"  # the container port the operator calls (LoRA routes, /v1/models)

MODEL_MOUNT = "/models"
CACHE_MOUNT = "/cache"
# The root filesystem is read-only: vLLM and its libraries write their caches and settings under
# $HOME (~/.cache/vllm, ~/.triton, ~/.config/vllm, ...) and temporary files, IPC sockets and
# torch's compiled kernels under /tmp, each a volume of the pod.
HOME_MOUNT = "/home/vllm"
TMP_MOUNT = "/tmp"
SHM_MOUNT = "/dev/shm"
# Requests of cpu and memory where spec.resources gives neither a request nor a limit (a limit
# alone is the request too), so that no pod is BestEffort (evicted first, no CPU share of its
# own): per GPU, what a node with one GPU has to spare (most have 4 or more CPUs and 16 GiB); on
# CPU, a small model's.
GPU_REQUESTS_PER_GPU = {"cpu": 2, "memory": 8}  # CPUs and GiB per GPU
CPU_REQUESTS = {"cpu": "2", "memory": "4Gi"}
# Seconds between SIGTERM's preStop and the server's own drain: endpoints stop sending traffic.
PRESTOP_SLEEP = 5


def selector_labels(name: str) -> dict[str, str]:
    """The fixed subset of labels that selects a VLLMDeployment's pods."""
    return {"app.kubernetes.io/name": "vllm", DEPLOYMENT_LABEL: name}


def common_labels(spec: DeploymentSpec) -> dict[str, str]:
    return {
        **selector_labels(spec.name),
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/managed-by": MANAGER,
    }


def worker_labels(spec: DeploymentSpec) -> dict[str, str]:
    """The labels of the worker pods of a multi-node replica: this deployment's, but not its
    selector's (`app.kubernetes.io/name: vllm-worker`), so that the Service, the PDB, the
    monitors, the adapters and the status, which select the servers, see the leaders only."""
    return {
        "app.kubernetes.io/name": "vllm-worker",
        DEPLOYMENT_LABEL: spec.name,
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": MANAGER,
    }


def workload_kind(spec: DeploymentSpec) -> str:
    """What runs the replicas: a Deployment of one pod each, or a LeaderWorkerSet of groups of
    `parallelism.nodes` pods."""
    return "LeaderWorkerSet" if spec.parallelism.multi_node else "Deployment"


# The kind of the sets a workload's controller makes, whose pods serve (owner chains go
# workload -> set -> pod: a Deployment's ReplicaSets, a LeaderWorkerSet's leader StatefulSet).
WORKLOAD_SETS = {"Deployment": "ReplicaSet", "LeaderWorkerSet": "StatefulSet"}


def owner_reference(spec: DeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "VLLMDeployment",
        "name": spec.name,
        "uid": spec.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(spec: DeploymentSpec, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": common_labels(spec),
        "ownerReferences": [owner_reference(spec)],
    }


def model_cache_claim_name(spec: DeploymentSpec) -> str:
    return f"{spec.name}-model-cache"


def service_url(spec: DeploymentSpec) -> str:
    return f"http://{spec.name}.{spec.namespace}.svc:{spec.port}/v1"


def admin_audience(namespace: str, name: str) -> str:
    """The audience the admin tokens for a VLLMDeployment's pods name."""
    return f"{namespace}/{name}"


def server_args(
    spec: DeploymentSpec, admin_public_key: str | None = None, *, worker: bool = False
) -> list[str]:
    """`vllm-ext-serve` arguments for the spec; with the operator's `admin_public_key`, the
    admin port takes only tokens it signed for this deployment (`clients.admin_token`). A
    multi-node replica's pods all get the same, with their rank and their leader's address from
    LeaderWorkerSet's variables; its workers (`worker`) run headless (no API)."""
    model = spec.model
    if model.scheme == "pvc":
        location = f"{MODEL_MOUNT}/{model.path_in_claim}".rstrip("/")
    elif model.scheme == "oci":
        location = MODEL_MOUNT
    else:  # hf:// and s3:// URIs as they are (the server downloads them first), paths
        location = model.uri
    args = [location, "--served-model-name", model.served_name]
    args += ["--host", "::", "--port", str(spec.port)]  # dual-stack: IPv4, IPv6 and both
    args += ["--admin-port", str(spec.admin_port)]  # LoRA admin routes, for the operator only
    if admin_public_key:
        args += ["--admin-token-public-key", admin_public_key]
        args += ["--admin-token-audience", admin_audience(spec.namespace, spec.name)]
    if model.revision:
        args += ["--revision", model.revision]
    engine, parallelism = spec.engine, spec.parallelism
    tensor = parallelism.tensor
    if engine.tensor_parallel_size is None and tensor == 1:
        tensor = None  # vLLM's default, left unsaid
    for flag, value in (
        ("--max-model-len", engine.max_model_len),
        ("--dtype", engine.dtype),
        ("--tensor-parallel-size", tensor),
        ("--pipeline-parallel-size", parallelism.pipeline if parallelism.pipeline > 1 else None),
        ("--gpu-memory-utilization", engine.gpu_memory_utilization),
        ("--max-num-seqs", engine.max_num_seqs),
    ):
        if value is not None:
            args += [flag, str(value)]
    if parallelism.multi_node:
        # vLLM's multi-node mode without Ray: every pod of a group joins the leader's
        # torch.distributed rendezvous; the leader (rank 0) serves the API.
        args += ["--distributed-executor-backend", "mp", "--nnodes", str(parallelism.nodes)]
        args += ["--node-rank", LWS_WORKER_INDEX, "--master-addr", LWS_LEADER_ADDRESS]
        args += ["--master-port", str(MASTER_PORT)]
        if worker:
            args.append("--headless")
    if engine.enforce_eager:
        args.append("--enforce-eager")
    if spec.lora.enabled:
        args += ["--enable-lora", "--max-loras", str(spec.lora.max_loras)]
        args += ["--max-lora-rank", str(spec.lora.max_rank)]
        if spec.lora.allowed_source_roots:  # the server checks real paths (symlinks) itself
            args += ["--lora-allowed-roots", *spec.lora.allowed_source_roots]
    if spec.orca.formats:
        args += ["--orca-formats", *spec.orca.formats]
    if spec.orca.grpc_port:
        args += ["--orca-grpc-port", str(spec.orca.grpc_port)]
    if spec.orca.min_report_interval:
        args += ["--orca-oob-min-interval", spec.orca.min_report_interval]
    # vLLM drains in-flight requests for this long after SIGTERM, inside the grace period. Last,
    # a flag of one value: the extra arguments cannot extend a list flag above (the roots!).
    args += ["--shutdown-timeout", str(spec.termination_grace_seconds - PRESTOP_SLEEP - 5)]
    return [*args, *engine.extra_args]


def _env(spec: DeploymentSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": HOME_MOUNT},
        {"name": "HF_HOME", "value": f"{CACHE_MOUNT}/huggingface"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    ]
    if spec.model.scheme != "hf":
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    if spec.model.s3 is not None:
        env += _s3_env(spec.model.s3)
    if spec.parallelism.multi_node:
        # vLLM's message queues between a group's pods bind the address it finds for itself;
        # the pod's own, as the group's other pods reach it.
        pod_ip = {"fieldRef": {"fieldPath": "status.podIP"}}
        env.append({"name": "VLLM_HOST_IP", "valueFrom": pod_ip})
    for var, ref in (("VLLM_API_KEY", spec.api_key), ("HF_TOKEN", spec.hf_token)):
        if ref is not None:
            env.append(
                {"name": var, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
            )
    return env + [dict(e) for e in spec.env]


# The S3 credentials' variables, keys of spec.model.s3.credentialsSecret (the session token
# only for temporary credentials: optional).
S3_CREDENTIALS = (
    ("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False), ("AWS_SESSION_TOKEN", True),
)  # fmt: skip


def _s3_env(store: S3Store) -> list[dict[str, Any]]:
    """AWS's variables for an s3:// model's store, as the server's downloader reads them."""
    env: list[dict[str, Any]] = []
    if store.credentials_secret is not None:
        for name, optional in S3_CREDENTIALS:
            ref: dict[str, Any] = {"name": store.credentials_secret, "key": name}
            if optional:
                ref["optional"] = True
            env.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    if store.endpoint is not None:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": store.endpoint})
    if store.region is not None:
        env.append({"name": "AWS_REGION", "value": store.region})
    return env


def default_requests(spec: DeploymentSpec) -> dict[str, str]:
    if spec.accelerator == CPU:
        return dict(CPU_REQUESTS)
    per_gpu = GPU_REQUESTS_PER_GPU
    return {"cpu": str(per_gpu["cpu"] * spec.gpus), "memory": f"{per_gpu['memory'] * spec.gpus}Gi"}


def _resources(spec: DeploymentSpec) -> dict[str, Any]:
    requests, limits = dict(spec.requests), dict(spec.limits)
    for name, value in default_requests(spec).items():
        if name not in requests and name not in limits:
            requests[name] = value
    if spec.accelerator != CPU and spec.gpus:
        # Extended resources: a limit (and an equal request, which Kubernetes requires).
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(spec.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _volumes(spec: DeploymentSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        # vLLM's workers share tensors through /dev/shm; the container default (64 MiB) is
        # far too small. What it holds is memory of the container, within its limit.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": SHM_MOUNT}]
    if spec.model_cache.enabled:
        claim = {"claimName": model_cache_claim_name(spec)}
        volumes.append({"name": "cache", "persistentVolumeClaim": claim})
    else:
        volumes.append({"name": "cache", "emptyDir": {}})
    mounts.append({"name": "cache", "mountPath": CACHE_MOUNT})
    for name, path in (("tmp", TMP_MOUNT), ("home", HOME_MOUNT)):
        volumes.append({"name": name, "emptyDir": {}})
        mounts.append({"name": name, "mountPath": path})
    if spec.model.claim:
        claim = {"claimName": spec.model.claim, "readOnly": True}
        volumes.append({"name": "model", "persistentVolumeClaim": claim})
    elif spec.model.image:
        # The kubelet pulls the image and mounts its files (read-only whatever the mount says);
        # its pull policy is Kubernetes' default for the reference, as for a container image.
        volumes.append({"name": "model", "image": {"reference": spec.model.image}})
    if spec.model.mounted:
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True})
    volumes += deepcopy([dict(v) for v in spec.volumes])
    mounts += deepcopy([dict(m) for m in spec.volume_mounts])
    return volumes, mounts


def _topology_spread(spec: DeploymentSpec) -> list[dict[str, Any]] | None:
    """The constraints as given; one without labelSelector counts this deployment's pods."""
    constraints = deepcopy([dict(c) for c in spec.topology_spread])
    # Multi-node groups: leaders and workers spread together (each role by the other's too).
    own = all_pods_labels(spec) if spec.parallelism.multi_node else selector_labels(spec.name)
    for constraint in constraints:
        constraint.setdefault("labelSelector", {"matchLabels": own})
    return constraints or None


def pod_labels(spec: DeploymentSpec) -> dict[str, str]:
    return {**spec.pod_labels, **common_labels(spec)}


def pod_template(
    spec: DeploymentSpec, admin_public_key: str | None = None, *, worker: bool = False
) -> dict[str, Any]:
    """The pod template of the servers (of the leaders, for a multi-node replica), or of the
    workers of a multi-node replica (`worker`): no API, admin or ORCA port, no adapters' gate."""
    volumes, mounts = _volumes(spec)
    ports = [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}]
    if not worker:
        ports.append({"name": ADMIN_PORT_NAME, "containerPort": spec.admin_port, "protocol": "TCP"})
        if spec.orca.grpc_port:
            ports.append({"name": "orca-grpc", "containerPort": spec.orca.grpc_port})
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.image,
        "command": ["vllm-ext-serve"],
        "args": server_args(spec, admin_public_key, worker=worker),
        "ports": ports,
        "env": _env(spec),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        # The server answers /health within a second of starting, loading or not: no
        # multi-hour startup probe. /ready turns 200 once the model is loaded.
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        # Let the endpoints controller take the pod out before vLLM starts draining.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP}}},
        "securityContext": deepcopy(dict(spec.security_context)),
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.termination_grace_seconds,
        "securityContext": deepcopy(dict(spec.pod_security_context)),
        # The server never calls the Kubernetes API: no token in the pod.
        "automountServiceAccountToken": False,
    }
    if spec.lora.enabled and not worker:
        pod_spec["readinessGates"] = [{"conditionType": ADAPTERS_LOADED}]
    optional = {
        "nodeSelector": dict(spec.node_selector) or None,
        "tolerations": [dict(t) for t in spec.tolerations] or None,
        "affinity": dict(spec.affinity) if spec.affinity else None,
        "runtimeClassName": spec.runtime_class,
        "priorityClassName": spec.priority_class,
        "imagePullSecrets": [{"name": n} for n in spec.image_pull_secrets] or None,
        "topologySpreadConstraints": _topology_spread(spec),
        "schedulerName": spec.scheduler_name,
    }
    pod_spec |= {k: v for k, v in optional.items() if v is not None}
    labels = {**spec.pod_labels, **worker_labels(spec)} if worker else pod_labels(spec)
    template_meta: dict[str, Any] = {"labels": labels}
    if spec.pod_annotations:
        template_meta["annotations"] = dict(spec.pod_annotations)
    return {"metadata": template_meta, "spec": pod_spec}


def build_deployment(spec: DeploymentSpec, admin_public_key: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(spec, spec.name),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(spec.name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": spec.rollout.max_surge,
                    "maxUnavailable": spec.rollout.max_unavailable,
                },
            },
            "progressDeadlineSeconds": progress_deadline(spec),
            "template": pod_template(spec, admin_public_key),
        },
    }


def build_leader_worker_set(
    spec: DeploymentSpec, admin_public_key: str | None = None
) -> dict[str, Any]:
    """A multi-node replica per group of `parallelism.nodes` pods: the leader serves (the API,
    the admin port, metrics), the workers hold their part of the model. A group is created,
    restarted (any of its pods restarting recreates all of it: vLLM's group cannot take a
    member back) and rolled out as one, and the scale subresource counts groups.

    Groups start together (LeaderCreated): vLLM's leader is ready only once its workers have
    joined, so LeaderReady would wait forever. Each group has its own headless Service for the
    leader's address (UniquePerReplica): a shared one would take the name of the model's
    Service."""
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": child_metadata(spec, spec.name),
        "spec": {
            "replicas": spec.replicas,
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": _group_rollout(spec),
            },
            "networkConfig": {"subdomainPolicy": "UniquePerReplica"},
            "leaderWorkerTemplate": {
                "size": spec.parallelism.nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": pod_template(spec, admin_public_key),
                "workerTemplate": pod_template(spec, admin_public_key, worker=True),
            },
        },
    }


def _group_rollout(spec: DeploymentSpec) -> dict[str, Any]:
    """spec.rollout in groups. LeaderWorkerSet's webhook refuses a surge and an unavailability
    that both come to 0 groups (a percentage of few replicas: 25 % of 3), which a Deployment
    takes; then one group at a time is unavailable, as the Deployment's own rounding does."""
    surge, unavailable = spec.rollout.max_surge, spec.rollout.max_unavailable

    def groups(step: int | str, round_up: bool) -> int:
        if isinstance(step, int):
            return step
        share = int(step.rstrip("%")) * spec.replicas
        return -(-share // 100) if round_up else share // 100

    if spec.replicas and groups(surge, True) == 0 and groups(unavailable, False) == 0:
        unavailable = 1
    return {"maxSurge": surge, "maxUnavailable": unavailable}


def build_workload(spec: DeploymentSpec, admin_public_key: str | None = None) -> dict[str, Any]:
    if spec.parallelism.multi_node:
        return build_leader_worker_set(spec, admin_public_key)
    return build_deployment(spec, admin_public_key)


def progress_deadline(spec: DeploymentSpec) -> int:
    """The Deployment's progressDeadlineSeconds: Kubernetes' "no progress" verdict comes well
    after the operator's own (`spec.startupTimeout`, read off the servers), or never: without a
    startup timeout a load of hours is progress, which the servers' `/ready` tells."""
    if spec.startup_timeout_seconds is None:
        return NO_PROGRESS_DEADLINE
    return min(NO_PROGRESS_DEADLINE, spec.startup_timeout_seconds + PROGRESS_DEADLINE_MARGIN)


def build_service(spec: DeploymentSpec) -> dict[str, Any]:
    ports = [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}]
    if spec.orca.grpc_port:
        ports.append({"name": "orca-grpc", "port": spec.orca.grpc_port, "targetPort": "orca-grpc"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(spec, spec.name),
        "spec": {"type": "ClusterIP", "selector": selector_labels(spec.name), "ports": ports},
    }


def build_model_cache(spec: DeploymentSpec) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "accessModes": [spec.model_cache.access_mode],
        "resources": {"requests": {"storage": spec.model_cache.size}},
    }
    if spec.model_cache.storage_class:
        claim["storageClassName"] = spec.model_cache.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": child_metadata(spec, model_cache_claim_name(spec)),
        "spec": claim,
    }


def all_pods_labels(spec: DeploymentSpec) -> dict[str, str]:
    """What every pod of this deployment carries, leaders, workers and single servers alike."""
    return {DEPLOYMENT_LABEL: spec.name, "app.kubernetes.io/managed-by": MANAGER}


def build_pdb(spec: DeploymentSpec) -> dict[str, Any]:
    """At most `pdb_max_unavailable` pods evicted at once. Over multi-node groups it counts
    every pod of every group: evicting one takes its whole group down (LeaderWorkerSet
    recreates it), which leaves more pods unavailable than the budget allows, so no other
    eviction is admitted until the group is back: groups go one at a time."""
    selector = all_pods_labels(spec) if spec.parallelism.multi_node else selector_labels(spec.name)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(spec, spec.name),
        "spec": {"maxUnavailable": spec.pdb_max_unavailable, "selector": {"matchLabels": selector}},
    }


def _scrape(spec: DeploymentSpec) -> dict[str, Any]:
    return {"port": "http", "path": "/metrics", "interval": spec.monitoring.interval}


def _monitor_metadata(spec: DeploymentSpec) -> dict[str, Any]:
    metadata = child_metadata(spec, spec.name)
    metadata["labels"] = {**spec.monitoring.labels, **metadata["labels"]}
    return metadata


def build_service_monitor(spec: DeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _monitor_metadata(spec),
        "spec": {
            "selector": {"matchLabels": selector_labels(spec.name)},
            "endpoints": [_scrape(spec)],
            # Series name their VLLMDeployment (serving_vllm_ai_deployment): autoscaling selects
            # by it.
            "podTargetLabels": [DEPLOYMENT_LABEL],
        },
    }


def build_pod_monitor(spec: DeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _monitor_metadata(spec),
        "spec": {
            "selector": {"matchLabels": selector_labels(spec.name)},
            "podMetricsEndpoints": [_scrape(spec)],
            "podTargetLabels": [DEPLOYMENT_LABEL],
        },
    }


def build_network_policy(spec: DeploymentSpec, operator_namespace: str) -> dict[str, Any]:
    """Ingress by port: the admin port (LoRA load/unload) for the operator only; the API port and
    the ORCA gRPC port for everyone, or, once `from` lists peers, for those (and the API port
    also for Prometheus, `metricsFrom`, and the operator)."""

    def operator() -> dict[str, Any]:
        return {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
            },
            "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
        }

    def rule(peers: list[dict[str, Any]] | None, port: int) -> dict[str, Any]:
        ports = {"ports": [{"protocol": "TCP", "port": port}]}
        return ports if peers is None else {"from": peers, **ports}  # no `from`: anyone

    peers, scrapers = spec.network_policy_from, spec.network_policy_metrics_from
    api_peers = [operator(), *deepcopy(peers), *deepcopy(scrapers)] if peers else None
    ingress = [rule(api_peers, spec.port), rule([operator()], spec.admin_port)]
    if spec.orca.grpc_port:
        ingress.append(rule([*deepcopy(peers)] if peers else None, spec.orca.grpc_port))
    selector = selector_labels(spec.name)
    if spec.parallelism.multi_node:
        # A group's pods talk among themselves on ports of their choosing (torch.distributed's
        # rendezvous on MASTER_PORT, then gloo/NCCL and vLLM's message queues): every TCP port
        # but the served ones, whose rules above stand, from this deployment's pods only.
        selector = all_pods_labels(spec)
        served = [spec.port, spec.admin_port, spec.orca.grpc_port]
        group = {
            "from": [{"podSelector": {"matchLabels": all_pods_labels(spec)}}],
            "ports": _tcp_ports_but(p for p in served if p),
        }
        ingress.append(group)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(spec, spec.name),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def _tcp_ports_but(excluded: Iterable[int]) -> list[dict[str, Any]]:
    """Every TCP port but `excluded`, as NetworkPolicy port ranges."""
    ranges, start = [], 1
    for port in sorted(set(excluded)):
        if port > start:
            ranges.append({"protocol": "TCP", "port": start, "endPort": port - 1})
        start = port + 1
    if start <= 65535:
        ranges.append({"protocol": "TCP", "port": start, "endPort": 65535})
    return ranges


def build_inference_pool(spec: DeploymentSpec) -> dict[str, Any]:
    """The Gateway API Inference Extension's InferencePool (v1) over the pods: the Deployment's
    selector, the API port (the only one that serves clients: the admin port is the operator's),
    the endpoint picker as the user names it. Gateways route to it from an HTTPRoute."""
    pool = spec.inference_pool
    if pool is None:
        raise ValueError(f"{spec.name} asks for no InferencePool")
    pool_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(spec.name)},
        "targetPorts": [{"number": spec.port}],
    }
    if pool.endpoint_picker_ref is not None:
        pool_spec["endpointPickerRef"] = deepcopy(dict(pool.endpoint_picker_ref))
    return {
        "apiVersion": INFERENCE_POOL_API_VERSION,
        "kind": "InferencePool",
        "metadata": child_metadata(spec, pool.name),
        "spec": pool_spec,
    }


def build_all(
    spec: DeploymentSpec,
    *,
    monitoring_available: bool,
    operator_namespace: str,
    admin_public_key: str | None = None,
    inference_pool_available: bool = False,
    autoscalers: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Every object the spec wants, in apply order (the claim before the pods that mount it).
    `admin_public_key` is the operator's (the servers' admin ports take its tokens only); the
    operator always has one, tests of other things may leave it out. Monitors and the
    InferencePool need their CRDs (`*_available`); `autoscalers` are spec.autoscaling's
    objects (model/autoscaling.py), whose kinds depend on the cluster."""
    wanted = []
    if spec.model_cache.enabled:
        wanted.append(build_model_cache(spec))
    wanted += [build_workload(spec, admin_public_key), build_service(spec)]
    # With an autoscaler that may go above one replica, the PDB stays whatever the count of
    # the moment (not created and deleted each time the count crosses 1 and 2).
    scales_out = spec.autoscaling is not None and spec.autoscaling.max_replicas > 1
    if spec.pdb_enabled and (spec.replicas > 1 or scales_out):
        wanted.append(build_pdb(spec))
    if monitoring_available and spec.monitoring.service_monitor:
        wanted.append(build_service_monitor(spec))
    if monitoring_available and spec.monitoring.pod_monitor:
        wanted.append(build_pod_monitor(spec))
    if spec.network_policy_enabled:
        wanted.append(build_network_policy(spec, operator_namespace))
    if inference_pool_available and spec.inference_pool is not None:
        wanted.append(build_inference_pool(spec))
    wanted += autoscalers
    return wanted
