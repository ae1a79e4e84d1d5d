"""One VLLMDeployment, level-based: read, build, apply what drifted, prune, write status.

Called for every event that may change the outcome (the CR itself, its Deployment, a Service
deleted, the drift loop); it computes the whole desired state each time, so running it twice
changes nothing. A pod that gains or loses a trouble (a missing Secret or key, an image that
cannot be pulled, a crash loop, no node that fits), and the progress of starting servers (polled,
as a load of hours sends no event), refresh only the status (`refresh_status`).

Secrets are never read: the operator neither checks that referenced Secrets exist nor reads
their values. The pods' own status tells (the kubelet reads them, with the pods' rights).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from .. import MANAGER
from ..clients.kube import ApiError, Kube
from ..clients.vllm_admin import VLLMAdminClient
from ..config import Settings
from ..metrics import APPLIES
from ..model import reasons
from ..model.autoscaling import build_hpa, build_interceptor_route, build_scaled_object
from ..model.builders import (
    WORKLOAD_SETS,
    all_pods_labels,
    build_all,
    selector_labels,
    service_url,
    workload_kind,
)
from ..model.drift import child_action, owned_by, with_digest
from ..model.pods import (
    GROUP_RESTART,
    StartupReport,
    Trouble,
    all_serving,
    group_workers,
    pods_of,
    server_url,
    starting,
    troubles,
)
from ..model.spec import DeploymentSpec, InvalidSpec, parse_deployment
from ..model.status import (
    AUTOSCALER,
    INFERENCE_POOL,
    Condition,
    autoscaler_condition,
    deployment_status,
    inference_pool_condition,
    model_cache_record,
    pod_problem,
    refreshable_from_pods,
    startup_problem,
    still_starting,
)
from .runs import bounded
from .status_writer import now, write_status

log = logging.getLogger(__name__)

# Kinds the operator creates and removes again when the spec stops wanting them. The model
# cache claim is left out on purpose: turning the cache off must not delete downloaded models
# (it goes with the VLLMDeployment, through its owner reference).
# The workloads too: a change of spec.parallelism.nodes between 1 and more replaces one kind
# by the other.
PRUNABLE = (
    "Deployment", "LeaderWorkerSet", "Service", "PodDisruptionBudget", "NetworkPolicy",
    "ServiceMonitor", "PodMonitor", "InferencePool", "ScaledObject", "HorizontalPodAutoscaler",
    "InterceptorRoute",
)  # fmt: skip
# Kinds of CRDs that may be missing (LeaderWorkerSet's, the Prometheus Operator's, the Gateway
# API Inference Extension's, KEDA's and its HTTP add-on's): neither built nor listed where the
# API server does not serve them.
OPTIONAL_KINDS = (
    "LeaderWorkerSet", "ServiceMonitor", "PodMonitor", "InferencePool", "ScaledObject",
    "InterceptorRoute",
)  # fmt: skip


@dataclass
class PodsSeen:
    """What the last status written of each VLLMDeployment, by (namespace, name), said of its
    pods: their troubles (a pod event that would change none of them costs no API call, see
    `Reconciler.pod_changed`), and whether replicas were starting (their progress is polled:
    a server loading for an hour sends no event)."""

    # (each pod's own: a multi-node group's failures remembered across its recreations are
    # not compared with the new pods' events)
    troubles: dict[tuple[str, str], dict[str, Trouble]] = field(default_factory=dict)
    starting: set[tuple[str, str]] = field(default_factory=set)
    # Multi-node groups recreated after a pod failed (pod name -> the pods' uids seen failing,
    # the last trouble), kept until every group serves: the recreated group's new pods have no
    # trouble of their own, and a server that always fails would otherwise read as starting.
    group_failures: dict[tuple[str, str], dict[str, tuple[frozenset[str], Trouble]]] = field(
        default_factory=dict
    )

    def with_group_failures(
        self,
        key: tuple[str, str],
        pods: Sequence[Mapping[str, Any]],
        found: dict[str, Trouble],
        *,
        serving: bool,
    ) -> dict[str, Trouble]:
        """`found` with the group failures seen since the groups last all served."""
        if serving:
            self.group_failures.pop(key, None)
            return found
        uids = {p["metadata"]["name"]: p["metadata"].get("uid", "") for p in pods}
        kept = self.group_failures.setdefault(key, {})
        for name, trouble in found.items():
            if trouble.kind == GROUP_RESTART:
                seen_uids = kept.get(name, (frozenset(), trouble))[0]
                kept[name] = (seen_uids | {uids.get(name, "")}, trouble)
        remembered = {
            name: Trouble(
                t.kind, f"{t.message}; group recreated {len(u)} times" if len(u) > 1 else t.message
            )
            for name, (u, t) in kept.items()
        }
        return {**remembered, **{n: t for n, t in found.items() if t.kind != GROUP_RESTART}}

    def record(self, key: tuple[str, str], troubles: dict[str, Trouble], *, starting: bool) -> None:
        self.troubles[key] = troubles
        if starting:
            self.starting.add(key)
        else:
            self.starting.discard(key)

    def forget(self, key: tuple[str, str]) -> None:
        self.troubles.pop(key, None)
        self.starting.discard(key)
        self.group_failures.pop(key, None)


def backoff(retry: int) -> float:
    """Seconds before retry number `retry + 1`: 5, 10, 20, ... capped at 5 minutes."""
    return float(min(300, 5 * 2**retry))


async def reconcile_deployment(
    kube: Kube,
    body: Mapping[str, Any],
    settings: Settings,
    *,
    retry: int,
    prune_children: bool,
    seen: PodsSeen | None = None,
    admin: VLLMAdminClient | None = None,
) -> None:
    """Bring the cluster to what `body` asks for and write its status (into `seen` too: what
    it says of the pods; `admin` asks starting servers how far they are). Raises
    kopf.PermanentError for a spec that cannot work, kopf.TemporaryError (with a delay growing
    with `retry`) where waiting helps; both after the status and an event say why. Pods that
    cannot serve are in the status only: the kubelet retries them, and their events refresh
    the status."""
    try:
        spec = parse_deployment(
            body, settings.images, platform_assigns_uids=settings.platform_assigns_uids
        )
    except (InvalidSpec, KeyError, TypeError) as e:
        message = f"invalid spec: {e}"
        problem = Condition("Degraded", True, reasons.INVALID_SPEC, message)
        await _write_status(kube, body, None, problem, seen, admin)
        raise kopf.PermanentError(message) from e

    # The children are applied even while pods fail to start: only then do the pods exist.
    pool_served = spec.inference_pool is not None and await kube.serves("InferencePool")
    scaler = await _autoscaler(kube, spec)
    monitoring = await kube.serves("ServiceMonitor")
    monitored = monitoring and (spec.monitoring.service_monitor or spec.monitoring.pod_monitor)
    wanted = build_all(
        spec,
        monitoring_available=monitoring,
        operator_namespace=settings.namespace,
        admin_public_key=settings.admin_public_key,
        inference_pool_available=pool_served,
        autoscalers=scaler.objects if scaler else (),
    )
    missing = None
    if spec.parallelism.multi_node and not await kube.serves("LeaderWorkerSet"):
        # Nothing runs the groups: the rest (the Service, the policies) is in place for when
        # LeaderWorkerSet is installed, which the drift check then sees.
        wanted = [o for o in wanted if o["kind"] != "LeaderWorkerSet"]
        missing = Condition(
            "Degraded", True, reasons.LEADER_WORKER_SET_MISSING,
            f"parallelism.nodes {spec.parallelism.nodes} runs each replica as a group of pods "
            "on a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1), whose CRD is not installed: "
            "install LeaderWorkerSet (kubernetes-sigs/lws)",
        )  # fmt: skip
    applied, in_place, conflicts, failures = await apply_children(kube, spec, wanted)
    removed = []
    if prune_children:
        # The workload of the other kind (parallelism.nodes changed) goes only once this one is
        # in place: not while LeaderWorkerSet is missing, or its name is someone else's.
        workload = f"{workload_kind(spec)}/{spec.name}"
        keep = () if workload in in_place else tuple(WORKLOAD_SETS)
        try:
            removed = await prune(kube, spec, wanted, keep_kinds=keep)
        except ApiError as e:
            failures.append(f"pruning: {e}")
    if applied or removed:
        log.info(
            "reconciled %s: applied %s, pruned %s",
            spec.name, applied or "nothing", removed or "nothing",
        )  # fmt: skip
    problem = missing
    if conflicts:
        message = "; ".join(conflicts + failures)
        problem = Condition("Degraded", True, reasons.NAME_CONFLICT, message)
    elif failures:
        problem = Condition("Degraded", True, reasons.APPLY_FAILED, "; ".join(failures))
    pool = None
    if spec.inference_pool is not None:  # no Degraded when missing: the Service serves anyway
        pool = inference_pool_condition(
            spec.inference_pool.name,
            served=pool_served,
            in_place=in_place,
            conflicts=conflicts,
            failures=failures,
        )

    extra = [pool] if pool is not None else []
    if scaler is not None:  # spec.autoscaling asks for one
        assert spec.autoscaling is not None
        extra.append(
            autoscaler_condition(
                spec.name,
                scaler.kind,
                address=spec.autoscaling.prometheus_address,
                min_replicas=spec.autoscaling.min_replicas,
                to_zero=scaler.to_zero,
                scraped=monitored,
                in_place=in_place,
                conflicts=conflicts,
                failures=failures,
            )
        )
    await _write_status(kube, body, spec, problem, seen, admin, extra)
    if problem is not None:
        raise kopf.TemporaryError(problem.message, delay=backoff(retry))


@dataclass(frozen=True)
class Autoscaler:
    """What spec.autoscaling becomes in this cluster: the kind that scales (ScaledObject where
    KEDA's CRDs are served, else HorizontalPodAutoscaler), its objects (none: KEDA without a
    Prometheus address, which the condition reports), and whether the model may go to zero."""

    kind: str
    objects: tuple[dict[str, Any], ...]
    to_zero: bool


async def _autoscaler(kube: Kube, spec: DeploymentSpec) -> Autoscaler | None:
    if spec.autoscaling is None:
        return None
    if not await kube.serves("ScaledObject"):
        return Autoscaler("HorizontalPodAutoscaler", (build_hpa(spec),), to_zero=False)
    if spec.autoscaling.prometheus_address is None:
        return Autoscaler("ScaledObject", (), to_zero=False)
    held = spec.autoscaling.min_replicas == 0 and await kube.serves("InterceptorRoute")
    objects = [build_scaled_object(spec, requests_held=held)]
    if held:
        objects.insert(0, build_interceptor_route(spec))  # the route before what reads it
    return Autoscaler("ScaledObject", tuple(objects), to_zero=held)


async def refresh_status(
    kube: Kube,
    body: Mapping[str, Any],
    settings: Settings,
    seen: PodsSeen | None = None,
    admin: VLLMAdminClient | None = None,
) -> None:
    """The status of `body` from its Deployment and pods, without an apply round (a pod of it
    gained or lost a trouble, or servers are starting). Left to the next apply round while one
    is due: a spec not reconciled yet, or a problem only an apply round clears
    (`refreshable_from_pods`)."""
    if not refreshable_from_pods(body):
        return
    try:
        spec = parse_deployment(
            body, settings.images, platform_assigns_uids=settings.platform_assigns_uids
        )
    except (InvalidSpec, KeyError, TypeError):
        return  # its status says so already (the generation was reconciled)
    await _write_status(kube, body, spec, None, seen, admin)


async def apply_children(
    kube: Kube, spec: DeploymentSpec, wanted: list[dict[str, Any]]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Create or apply each child that is missing, that we now want differently (the digest), or
    that someone changed (a field of ours differs); one child's failure does not stop the
    others. Returns what was written, what is now as wanted (written or unchanged), the name
    conflicts (an object of a child's name that this VLLMDeployment does not control: left as
    it is) and the failures. An unchanged object costs a read, not a write (and no watch event
    echoing back to us)."""
    applied, in_place, conflicts, failures = [], [], [], []
    for obj in map(with_digest, wanted):  # the Deployment comes before what routes to it
        meta = obj["metadata"]
        what = f"{obj['kind']}/{meta['name']}"
        try:
            actual = await kube.get_or_none(obj["kind"], meta["namespace"], meta["name"])
            action = child_action(obj, actual, spec.uid)
            if action == "conflict":
                conflicts.append(f"{what} exists and is not controlled by this VLLMDeployment")
                if obj["kind"] in WORKLOAD_SETS:
                    # Someone else's workload holds the name: no Service (or monitor) of ours
                    # may send this model's clients, and their keys, to it.
                    break
                continue
            if action == "wait":
                failures.append(f"{what} is being deleted; it comes back once it is gone")
                continue
            if action == "create":
                await kube.create(obj)
            elif action == "apply":
                await kube.apply(obj)
            else:
                in_place.append(what)
                continue
        except ApiError as e:
            failures.append(f"{what}: {e.message}")
            continue
        APPLIES.labels(obj["kind"]).inc()
        applied.append(what)
        in_place.append(what)
    return applied, in_place, conflicts, failures


async def prune(
    kube: Kube, spec: DeploymentSpec, wanted: list[dict[str, Any]], keep_kinds: Sequence[str] = ()
) -> list[str]:
    """Delete objects this VLLMDeployment owns but no longer wants, except of `keep_kinds`;
    returns what went."""
    keep = {(o["kind"], o["metadata"]["name"]) for o in wanted}
    labels = {**selector_labels(spec.name), "app.kubernetes.io/managed-by": MANAGER}
    removed = []
    for kind in PRUNABLE:
        if kind in keep_kinds:
            continue
        if kind in OPTIONAL_KINDS and not await kube.serves(kind):
            continue
        for obj in await kube.list(kind, spec.namespace, labels):
            name = obj["metadata"]["name"]
            # The label selector narrows the list; ownership decides (labels can be copied).
            if (kind, name) not in keep and owned_by(obj, spec.uid):
                await kube.delete(kind, spec.namespace, name)
                removed.append(f"{kind}/{name}")
    return removed


async def _write_status(
    kube: Kube,
    body: Mapping[str, Any],
    spec: DeploymentSpec | None,
    problem: Condition | None,
    seen: PodsSeen | None,
    admin: VLLMAdminClient | None,
    extra: Sequence[Condition] = (),
) -> None:
    """The status from the Deployment and its pods, with the apply round's `problem` first;
    else pods that cannot serve without a change (a missing Secret, an image that cannot be
    pulled, a crash loop, no node that fits), then a server that died while starting or that
    starts for longer than `spec.startupTimeout`, are Degraded. Starting servers say how far
    they are (`/ready`, asked through `admin`): that is progress, not failure, and a download
    they report complete is what the model cache holds (`status.modelCache`). `extra`: the
    apply round's InferencePoolCreated and AutoscalerCreated (a refresh keeps the last ones;
    none when not asked)."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    deployment = None  # the workload: a Deployment, or a LeaderWorkerSet (its counts are groups)
    if spec and (not spec.parallelism.multi_node or await kube.serves("LeaderWorkerSet")):
        deployment = await kube.get_or_none(workload_kind(spec), namespace, name)
    if spec and deployment and not owned_by(deployment, spec.uid):
        deployment = None  # someone else's, of the same name: its replicas are not ours
    at_rest = spec is None or all_serving(deployment, spec.replicas)
    servers, pods = ([], []) if at_rest else await _pods(kube, spec, deployment)
    found = own = troubles(pods)
    if spec and spec.parallelism.multi_node and seen is not None:
        found = seen.with_group_failures((namespace, name), pods, found, serving=at_rest)
    startup = await _startup_reports(spec, servers, found, admin) if spec else {}
    if spec and problem is None:
        problem = pod_problem(found) or startup_problem(startup, spec.startup_timeout_seconds)
    desired = spec.replicas if spec else (body.get("spec") or {}).get("replicas", 0)
    previous, stamp = body.get("status") or {}, now()
    status = deployment_status(
        previous=previous,
        desired=desired,
        deployment=deployment,
        problem=problem,
        selector=",".join(f"{k}={v}" for k, v in selector_labels(name).items()),
        url=service_url(spec) if spec else "",
        generation=meta.get("generation"),
        now=stamp,
        starting=startup,
        extra=extra,
        stale=_stale(spec),
    )
    if spec is not None:  # an invalid spec leaves the record of the cache as it is
        cached = spec.model.uri if spec.model_cache.enabled else None
        record = model_cache_record(previous.get("modelCache"), cached, startup, now=stamp)
        if record is not None or "modelCache" in previous:
            status["modelCache"] = record  # None: dropped (the status is a merge patch)
    await write_status(kube, "VLLMDeployment", body, status)
    if seen is not None:
        seen.record((namespace, name), own, starting=bool(startup))


def _stale(spec: DeploymentSpec | None) -> tuple[str, ...]:
    """Conditions of what the spec no longer asks for."""
    if spec is None:
        return ()
    return (
        *((INFERENCE_POOL,) if spec.inference_pool is None else ()),
        *((AUTOSCALER,) if spec.autoscaling is None else ()),
    )


async def _pods(
    kube: Kube, spec: DeploymentSpec, workload: Mapping[str, Any] | None
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The servers of `workload` (a Deployment's pods, a LeaderWorkerSet's leaders) and all
    its pods (with a LeaderWorkerSet's workers, whose troubles keep a group from forming),
    chosen through their owner chains (labels only narrow the lists)."""
    if workload is None:
        return [], []
    multi_node = workload["kind"] == "LeaderWorkerSet"
    labels = all_pods_labels(spec) if multi_node else selector_labels(spec.name)
    sets = await kube.list(WORKLOAD_SETS[workload["kind"]], spec.namespace, labels)
    pods = await kube.list("Pod", spec.namespace, labels) if sets else []
    servers = pods_of(workload, sets, pods, spec.uid)
    if not multi_node:
        return servers, servers
    return servers, [*servers, *group_workers(servers, sets, pods)]


async def _startup_reports(
    spec: DeploymentSpec,
    pods: Sequence[Mapping[str, Any]],
    found: Mapping[str, Trouble],
    admin: VLLMAdminClient | None,
) -> dict[str, StartupReport | None]:
    """Pod name -> what its starting server's `/ready` says (None: no answer), for the pods that
    run but do not serve yet and have no trouble."""
    waiting = [p for p in pods if starting(p) and p["metadata"]["name"] not in found]
    urls = [server_url(p, spec.port) for p in waiting]

    async def ask(url: str | None) -> StartupReport | None:
        return await admin.startup(url) if admin is not None and url else None

    reports = await bounded([ask(url) for url in urls])
    # A server that says it is ready, sleeping or draining is not starting (its container is
    # not ready for another reason: a slow readiness probe, a sidecar).
    return {
        p["metadata"]["name"]: r for p, r in zip(waiting, reports, strict=True) if still_starting(r)
    }
