"""Pure status logic: conditions in the metav1.Condition shape, a VLLMDeployment's status from
its Deployment's, a LoraAdapter's from the load calls, and the LoRA readiness gate of a pod."""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import reasons
from .adapters import AdapterSpec, CallResult, ServerReport
from .builders import ADAPTERS_LOADED
from .pods import (
    CONFIG_ERROR,
    CRASH_LOOP,
    GROUP_RESTART,
    IMAGE_PULL,
    UNSCHEDULABLE,
    Download,
    StartupReport,
    Trouble,
    containers_ready,
    deleting,
)

NOT_LOADED_YET = "not loaded yet"  # a pod's adapter entry before its first load call
# Bounds of the pod-config message: kubelet messages are short, but a large Deployment can have
# many pods failing alike (a status and an event stay readable, and small).
PODS_NAMED = 3  # per kubelet message; the rest are counted
KUBELET_MESSAGE_CHARS = 300
POD_CONFIG_MESSAGE_CHARS = 1000
_ABOUT_A_SECRET = re.compile(r"\bsecrets?\b", re.IGNORECASE)
# metav1.Condition's maxLength of a message: the CRDs say so, and a longer one fails the write.
MAX_CONDITION_MESSAGE = 32768


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    new: Condition,
    *,
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """`conditions` with `new` in place of its type. lastTransitionTime moves only when the
    status flips; the whole list is returned (a merge patch replaces lists)."""
    status = "True" if new.status else "False"
    out, found = [], False
    for cond in conditions:
        if cond.get("type") != new.type:
            out.append(dict(cond))
            continue
        found = True
        flipped = cond.get("status") != status
        since = now if flipped else cond.get("lastTransitionTime", now)
        out.append(_condition(new, status, since, generation))
    if not found:
        out.append(_condition(new, status, now, generation))
    return out


def _condition(new: Condition, status: str, when: str, generation: int | None) -> dict[str, Any]:
    message = new.message
    if len(message) > MAX_CONDITION_MESSAGE:  # the API server would refuse the whole status
        message = message[: MAX_CONDITION_MESSAGE - 1] + "…"
    cond = {
        "type": new.type,
        "status": status,
        "reason": new.reason,
        "message": message,
        "lastTransitionTime": when,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def pod_gate_condition(
    pod: Mapping[str, Any], verdict: Condition, *, now: str
) -> dict[str, Any] | None:
    """The readiness-gate condition (`verdict.type` names the gate) to write on `pod`, or None
    if the pod does not carry the gate or already says the same. lastTransitionTime moves only
    when the status flips (a new reason or message alone keeps it)."""
    gates = [g.get("conditionType") for g in (pod.get("spec") or {}).get("readinessGates") or []]
    if verdict.type not in gates:
        return None
    current = get_condition((pod.get("status") or {}).get("conditions") or [], verdict.type) or {}
    status = "True" if verdict.status else "False"
    wanted = {"status": status, "reason": verdict.reason, "message": verdict.message}
    if all(current.get(k) == v for k, v in wanted.items()):
        return None
    since = current.get("lastTransitionTime") if current.get("status") == status else None
    return {"type": verdict.type, **wanted, "lastTransitionTime": since or now}


def get_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def _deployment_condition(deployment: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return get_condition((deployment.get("status") or {}).get("conditions") or [], type_) or {}


def deployment_conditions(
    desired: int,
    deployment: Mapping[str, Any] | None,
    problem: Condition | None,
    starting: Condition | None = None,
) -> list[Condition]:
    """Available, Progressing and Degraded of a VLLMDeployment whose Deployment is `deployment`
    (None: not created yet), whose reconcile hit `problem` (None: applied fine) and whose
    starting replicas say `starting` (`startup_progress`; None: none is starting)."""
    status = (deployment or {}).get("status") or {}
    ready = status.get("readyReplicas", 0)
    updated = status.get("updatedReplicas", 0)
    progress = _deployment_condition(deployment or {}, "Progressing")
    failure = _deployment_condition(deployment or {}, "ReplicaFailure")

    if desired == 0:
        available = Condition("Available", False, reasons.SCALED_TO_ZERO, "replicas is 0")
    elif ready:
        available = Condition(
            "Available", True, reasons.MINIMUM_REPLICAS_READY, f"{ready}/{desired} replicas ready"
        )
    else:
        available = Condition(
            "Available", False, reasons.NO_REPLICA_READY, f"0/{desired} replicas ready"
        )

    if progress.get("reason") == "ProgressDeadlineExceeded":
        progressing = Condition(
            "Progressing", False, reasons.PROGRESS_DEADLINE_EXCEEDED, progress.get("message", "")
        )
    elif starting is not None:
        progressing = starting
    elif deployment is None or ready < desired or updated < desired:
        progressing = Condition(
            "Progressing", True, reasons.ROLLING_OUT,
            f"{updated} updated, {ready} ready of {desired} replicas",
        )  # fmt: skip
    else:
        progressing = Condition(
            "Progressing", True, reasons.ROLLOUT_COMPLETE, f"{ready}/{desired} replicas ready"
        )

    if problem is not None:
        degraded = problem
    elif failure.get("status") == "True":
        degraded = Condition(
            "Degraded", True, reasons.REPLICA_FAILURE, failure.get("message", "replica failure")
        )
    elif progressing.reason == reasons.PROGRESS_DEADLINE_EXCEEDED:
        degraded = Condition("Degraded", True, progressing.reason, progressing.message)
    else:
        degraded = Condition("Degraded", False, reasons.AS_EXPECTED, "")
    return [available, progressing, degraded]


def _grouped(messages: Mapping[str, str], verb: str) -> list[str]:
    """`pods a, b, c and 2 more VERB: MESSAGE` per distinct message (pod name -> message), each
    message on one line and cut to `KUBELET_MESSAGE_CHARS`."""
    by_message: dict[str, list[str]] = {}
    for pod in sorted(messages):
        message = " ".join(messages[pod].split())  # one line
        if len(message) > KUBELET_MESSAGE_CHARS:
            message = message[: KUBELET_MESSAGE_CHARS - 3] + "..."
        by_message.setdefault(message, []).append(pod)
    entries = []
    for message, pods in by_message.items():
        named = ", ".join(pods[:PODS_NAMED])
        if len(pods) > PODS_NAMED:
            named += f" and {len(pods) - PODS_NAMED} more"
        entries.append(f"{'pods' if len(pods) > 1 else 'pod'} {named} {verb}: {message}")
    return entries


def _cut(text: str) -> str:
    return (
        text
        if len(text) <= POD_CONFIG_MESSAGE_CHARS
        else text[: POD_CONFIG_MESSAGE_CHARS - 3] + "..."
    )


def pod_config_problem(errors: Mapping[str, str]) -> Condition | None:
    """Degraded for the pods the kubelet cannot start from their configuration (`errors`: pod
    name -> the kubelet's message, as `pods.config_error` reads them), or None if there are
    none. `SecretNotFound` when every message is about a Secret (`secret "hf-token" not
    found`, `couldn't find key token in Secret models/hf-token`), else `PodConfigError`. Pods
    failing alike share one entry: `pods a, b, c and 2 more cannot start: MESSAGE`."""
    if not errors:
        return None
    text = _cut("; ".join(_grouped(errors, "cannot start")))
    about_secrets = all(_ABOUT_A_SECRET.search(m) for m in errors.values())
    reason = reasons.SECRET_NOT_FOUND if about_secrets else reasons.POD_CONFIG_ERROR
    return Condition("Degraded", True, reason, text)


# Pod troubles by weight (the first present names the reason) and how each is worded.
_TROUBLES = (
    (CONFIG_ERROR, "", "cannot start"),  # its reason: pod_config_problem's
    (IMAGE_PULL, reasons.IMAGE_PULL_BACK_OFF, "cannot pull its image"),
    (CRASH_LOOP, reasons.CRASH_LOOP_BACK_OFF, "keeps failing"),
    (GROUP_RESTART, reasons.GROUP_RESTARTED, "failed, and LeaderWorkerSet recreated its group"),
    (UNSCHEDULABLE, reasons.UNSCHEDULABLE, "cannot be scheduled"),
)


def pod_problem(troubles: Mapping[str, Trouble]) -> Condition | None:
    """Degraded for the pods that cannot serve without a change (`pods.troubles`), or None.
    The weightiest trouble present names the reason (a missing Secret before an image that
    cannot be pulled, a crash loop, then no node that fits: `Insufficient nvidia.com/gpu`); the
    message names them all, grouped."""
    reason, entries = None, []
    for kind, kind_reason, verb in _TROUBLES:
        messages = {pod: t.message for pod, t in troubles.items() if t.kind == kind}
        if not messages:
            continue
        if reason is None:
            config = pod_config_problem(messages) if kind == CONFIG_ERROR else None
            reason = config.reason if config else kind_reason
        entries += _grouped(messages, verb)
    if reason is None:
        return None
    return Condition("Degraded", True, reason, _cut("; ".join(entries)))


# Problems an apply round finds (and only an apply round clears): a status refreshed from the pods
# alone keeps them.
APPLY_ROUND_REASONS = (
    reasons.INVALID_SPEC, reasons.NAME_CONFLICT, reasons.APPLY_FAILED,
    reasons.LEADER_WORKER_SET_MISSING,
)  # fmt: skip


def refreshable_from_pods(body: Mapping[str, Any]) -> bool:
    """Whether the status of the VLLMDeployment `body` may be refreshed from its pods alone,
    without an apply round: its generation was reconciled (else the status would claim a spec
    that was not applied yet) and no problem of an apply round stands."""
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    degraded = get_condition(status.get("conditions") or [], "Degraded") or {}
    return (
        status.get("observedGeneration") == generation
        and degraded.get("reason") not in APPLY_ROUND_REASONS
    )


# Whether the InferencePool spec.inferencePool asks for is in place (present only while asked).
INFERENCE_POOL = "InferencePoolCreated"


def inference_pool_condition(
    name: str,
    *,
    served: bool,
    in_place: Sequence[str],
    conflicts: Sequence[str],
    failures: Sequence[str],
) -> Condition:
    """The InferencePoolCreated condition after an apply round: the pool `name` is among the
    children `in_place` (applied, or already as wanted), or why not: its CRD is not `served`, an
    object of its name is someone else's, or the apply failed (the round's messages)."""
    what = f"InferencePool/{name}"
    if not served:
        return Condition(
            INFERENCE_POOL, False, reasons.CRD_NOT_INSTALLED,
            "the API server does not serve inferencepools.inference.networking.k8s.io/v1: "
            "install the Gateway API Inference Extension's CRDs (the pool follows within "
            "minutes)",
        )  # fmt: skip
    if what in in_place:
        return Condition(INFERENCE_POOL, True, reasons.INFERENCE_POOL_CREATED, f"{what} applied")
    ours = [m for m in failures if m.startswith((f"{what}:", f"{what} "))]
    if ours:
        return Condition(INFERENCE_POOL, False, reasons.APPLY_FAILED, "; ".join(ours))
    ours = [m for m in conflicts if m.startswith(f"{what} ")] or list(conflicts)
    return Condition(
        INFERENCE_POOL, False, reasons.NAME_CONFLICT, "not applied: " + "; ".join(ours)
    )


AUTOSCALER = "AutoscalerCreated"


def autoscaler_condition(
    name: str,
    kind: str,
    *,
    address: str | None,
    min_replicas: int,
    to_zero: bool = False,
    scraped: bool = True,
    in_place: Sequence[str],
    conflicts: Sequence[str],
    failures: Sequence[str],
) -> Condition:
    """The AutoscalerCreated condition after an apply round: `kind` (ScaledObject where KEDA is
    installed, else HorizontalPodAutoscaler) named `name` is among the children `in_place`, or
    why not: KEDA's trigger has no Prometheus `address`, an object of its name is someone
    else's, or the apply failed (the round's messages)."""
    what = f"{kind}/{name}"
    unscraped = (
        ""
        if scraped
        else "; no ServiceMonitor or PodMonitor of the operator's scrapes these servers: the "
        "Prometheus read must scrape them with the label serving_vllm_ai_deployment"
    )
    if kind == "ScaledObject" and address is None:
        return Condition(
            AUTOSCALER, False, reasons.PROMETHEUS_ADDRESS_MISSING,
            "KEDA is installed, and its Prometheus trigger needs autoscaling.prometheus.address",
        )  # fmt: skip
    if what in in_place:
        if kind == "ScaledObject":
            zero = ""
            if min_replicas == 0:
                zero = (
                    f"; to zero when idle, requests held by InterceptorRoute/{name}"
                    if to_zero
                    else "; keeping 1 replica: scaling to zero needs KEDA's HTTP add-on "
                    "(its InterceptorRoute CRD) to hold requests while the first replica starts"
                )
            return Condition(
                AUTOSCALER, True, reasons.KEDA_SCALED_OBJECT,
                f"{what} applied: KEDA scales spec.replicas on Prometheus{zero}{unscraped}",
            )  # fmt: skip
        zero = " (at least 1: scaling to zero needs KEDA)" if min_replicas == 0 else ""
        return Condition(
            AUTOSCALER, True, reasons.HORIZONTAL_POD_AUTOSCALER,
            f"{what} applied on an external metric (KEDA is not installed; a Prometheus "
            f"adapter must serve the metric){zero}{unscraped}",
        )  # fmt: skip
    ours = [m for m in failures if m.startswith((f"{what}:", f"{what} "))]
    if ours:
        return Condition(AUTOSCALER, False, reasons.APPLY_FAILED, "; ".join(ours))
    ours = [m for m in conflicts if m.startswith(f"{what} ")] or list(conflicts)
    return Condition(AUTOSCALER, False, reasons.NAME_CONFLICT, "not applied: " + "; ".join(ours))


def deployment_status(
    *,
    previous: Mapping[str, Any],
    desired: int,
    deployment: Mapping[str, Any] | None,
    problem: Condition | None,
    selector: str,
    url: str,
    generation: int | None,
    now: str,
    starting: Mapping[str, StartupReport | None] | None = None,
    extra: Sequence[Condition] = (),
    stale: Collection[str] = (),
) -> dict[str, Any]:
    """The whole status of a VLLMDeployment; `starting`: what its pods that run but do not serve
    yet say (pod -> `/ready`, None: no answer); `extra`: conditions of this round besides
    Available, Progressing and Degraded; `stale`: condition types to drop (no longer asked)."""
    status = (deployment or {}).get("status") or {}
    ready = status.get("readyReplicas", 0)
    starting = starting or {}
    progress = startup_progress(desired, starting)
    computed = deployment_conditions(desired, deployment, problem, progress)
    conditions: list[dict[str, Any]] = [
        c for c in previous.get("conditions") or [] if c.get("type") not in stale
    ]
    for cond in [*computed, *extra]:
        conditions = set_condition(conditions, cond, now=now, generation=generation)
    out: dict[str, Any] = {
        "phase": deployment_phase(desired, computed, starting),
        "replicas": status.get("replicas", 0),
        "readyReplicas": ready,
        "readyText": f"{ready}/{desired}",
        "selector": selector,
        "url": url,
        "conditions": conditions,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


# vllm-ext-serve's startup phases, in order (its `/ready` names them), and their names in a
# VLLMDeployment's `status.phase`.
STARTUP_PHASES = {
    "starting": "Starting",
    # An hf:// or s3:// model: another server sharing the model cache downloads it.
    "waiting_for_cache": "WaitingForCache",
    "downloading": "Downloading",
    "importing": "Importing",
    "loading_model": "LoadingModel",
    # A multi-node replica's leader (and workers) waiting for the group's other pods to join
    # torch.distributed's rendezvous, between stretches of loading_model.
    "joining_group": "JoiningGroup",
    "profiling": "Profiling",
    "warming_up": "WarmingUp",
    "starting_api": "StartingAPI",
}
DEAD = "dead"  # the phase of a server that failed
STARTING_NAMED = 6  # starting replicas described in the Progressing message; the rest counted


def duration(seconds: float) -> str:
    """`40s`, `2m05s`, `14m`, `1h05m`, `2d03h`: short enough for a condition message."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 10:
        return f"{minutes}m{secs:02d}s"
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def still_starting(report: StartupReport | None) -> bool:
    """Whether a pod whose server said `report` (None: nothing) is starting: it does not
    answer yet, is in a startup phase, or died in one. A server that says it is ready,
    sleeping or draining is not, whatever keeps its container from being ready."""
    return report is None or report.phase in STARTUP_PHASES or report.phase == DEAD


def _phase_rank(report: StartupReport | None) -> int:
    """Earlier phases first; no answer before them all (the server is not even listening)."""
    if report is None:
        return -1
    return list(STARTUP_PHASES).index(report.phase) if report.phase in STARTUP_PHASES else 99


_SIZE_UNITS = ("B", "kB", "MB", "GB", "TB")


def size(count: int) -> str:
    """`512 B`, `1.5 GB`, `140 GB`: decimal units, rounded down (never more than is there)."""
    value, unit = float(count), 0
    while value >= 1000 and unit < len(_SIZE_UNITS) - 1:
        value, unit = value / 1000, unit + 1
    if unit == 0:
        return f"{count} B"
    shown = f"{math.floor(value * 10) / 10:.1f}" if value < 10 else f"{math.floor(value)}"
    return f"{shown} {_SIZE_UNITS[unit]}"


def _phase_text(report: StartupReport) -> str:
    """`loading_model for 14m`; a download with its share, size and time left: `downloading
    41 % of 140 GB for 3m00s (8m left)`, `downloading 12.5 GB for 40s` (total unknown)."""
    done, download = f"for {duration(report.phase_seconds)}", report.download
    if report.phase != "downloading" or download is None:
        return f"{report.phase} {done}"
    total = download.total_bytes
    if total:
        share = f"{min(100, download.bytes * 100 // total)} % of {size(total)}"
    else:
        share = size(download.bytes)
    left = f" ({duration(download.eta_seconds)} left)" if download.eta_seconds is not None else ""
    return f"downloading {share} {done}{left}"


def startup_progress(
    desired: int, starting: Mapping[str, StartupReport | None]
) -> Condition | None:
    """Progressing while replicas start: `2/3 replicas starting: waiting_for_cache for 3m00s,
    downloading 41 % of 140 GB for 3m00s (8m left)` (the least advanced first); None when none
    is starting. A server that died is not progress (`startup_problem`)."""
    alive = {pod: r for pod, r in starting.items() if r is None or r.phase != DEAD}
    if not alive:
        return None
    ordered = sorted(alive, key=lambda pod: (_phase_rank(alive[pod]), pod))
    parts = []
    for pod in ordered[:STARTING_NAMED]:
        report = alive[pod]
        if report is None:
            parts.append("not answering yet")
        else:
            parts.append(_phase_text(report))
    if len(ordered) > STARTING_NAMED:
        parts.append(f"and {len(ordered) - STARTING_NAMED} more")
    message = f"{len(alive)}/{desired} replicas starting: {', '.join(parts)}"
    return Condition("Progressing", True, reasons.LOADING_MODEL, message)


def model_cache_record(
    previous: Mapping[str, Any] | None,
    uri: str | None,
    starting: Mapping[str, StartupReport | None],
    *,
    now: str,
) -> dict[str, Any] | None:
    """`status.modelCache`: what the model cache holds, once a starting server reports its
    download of `uri` (spec.model.uri; None: no cache, no record) complete. The `previous`
    record stands until a download of another model or revision completes (it describes the
    cache's volume, not the pods of the moment); the same one again keeps its readyTime."""
    if uri is None:
        return None
    done = [
        download
        for pod in sorted(starting)
        if (download := _download_of(starting[pod])) is not None
        and download.complete
        and download.source == uri
    ]
    if not done:
        return dict(previous) if previous else None
    record: dict[str, Any] = {"model": uri}
    if done[0].revision is not None:
        record["revision"] = done[0].revision
    record["sizeBytes"] = done[0].bytes
    previous = previous or {}
    same = all(previous.get(k) == record.get(k) for k in ("model", "revision"))
    record["readyTime"] = previous.get("readyTime", now) if same else now
    return record


def _download_of(report: StartupReport | None) -> Download | None:
    return report.download if report is not None else None


def startup_problem(
    starting: Mapping[str, StartupReport | None], timeout_seconds: float | None
) -> Condition | None:
    """Degraded for a starting server that says it died (`ServerFailed`, its error), or that
    has been starting for longer than `timeout_seconds` (`StartupTimeout`; None: no limit, a
    load of hours is still progress). None otherwise."""
    dead = {
        pod: r.error or "no reason given" for pod, r in starting.items() if r and r.phase == DEAD
    }
    if dead:
        return Condition(
            "Degraded", True, reasons.SERVER_FAILED, _cut("; ".join(_grouped(dead, "failed")))
        )
    if timeout_seconds is None:
        return None
    late = {
        pod: f"starting for {duration(r.uptime_seconds)}, {r.phase} for {duration(r.phase_seconds)}"
        for pod, r in starting.items()
        if r is not None and r.uptime_seconds > timeout_seconds
    }
    if not late:
        return None
    entries = _grouped(late, f"is over its startupTimeout of {duration(timeout_seconds)}")
    return Condition("Degraded", True, reasons.STARTUP_TIMEOUT, _cut("; ".join(entries)))


def deployment_phase(
    desired: int,
    conditions: Sequence[Condition],
    starting: Mapping[str, StartupReport | None],
) -> str:
    """One word for `kubectl get vllmd`: Degraded, ScaledToZero, Ready, the least advanced
    startup phase of the starting replicas (LoadingModel, Profiling, ...), RollingOut, or
    Pending (pods not running yet: scheduled, pulled, created)."""
    by_type = {c.type: c for c in conditions}
    if by_type["Degraded"].status:
        return "Degraded"
    if desired == 0:
        return "ScaledToZero"
    if by_type["Progressing"].reason == reasons.ROLLOUT_COMPLETE:
        return "Ready"
    alive = [r for r in starting.values() if r is None or r.phase != DEAD]
    if alive:
        least = min(alive, key=_phase_rank)
        if least is None or least.phase not in STARTUP_PHASES:
            return "Starting"
        return STARTUP_PHASES[least.phase]
    available = by_type["Available"]
    return "RollingOut" if available.status else "Pending"


def transitions(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The notable transitions, which deserve an event: conditions of `after` whose status
    flipped since `before`, and a new Degraded=True or InferencePoolCreated=False (a pool asked
    for and not created; a first status is otherwise no news)."""
    old = {c.get("type"): c.get("status") for c in before}
    bad_news = {("Degraded", "True"), (INFERENCE_POOL, "False"), (AUTOSCALER, "False")}
    return [
        c
        for c in after
        if (c.get("type") in old and old[c.get("type")] != c.get("status"))
        or (c.get("type") not in old and (c.get("type"), c.get("status")) in bad_news)
    ]


def adapter_gate(
    pod: Mapping[str, Any],
    report: ServerReport | None,
    meant: Sequence[str],
    results: Mapping[tuple[str, str], CallResult],
    *,
    adapters_active: bool,
) -> Condition | None:
    """The `adapters-loaded` readiness gate of a pod whose server said `report` (None: it did
    not answer), meant to hold the LoraAdapters `meant`, after the load calls' `results`
    ((LoraAdapter, pod) -> outcome). None: leave the gate as it is."""
    name = (pod.get("metadata") or {}).get("name")
    if deleting(pod):
        return None  # going away: its gate no longer matters
    if report is None and adapters_active and containers_ready(pod):
        # The container serves (the kubelet says so) but did not answer us: a timeout, a
        # rotated API key. Not a restart: leave the gate as it is.
        return None
    if report is None and adapters_active:
        # Not serving (starting, restarted): whatever it held is gone or unknown.
        return Condition(
            ADAPTERS_LOADED, False, reasons.SERVER_NOT_READY, "waiting for the server to serve"
        )
    if report is None or not meant:
        return Condition(
            ADAPTERS_LOADED, True, reasons.NO_ADAPTERS, "no LoRA adapter is meant for this pod"
        )
    wanted = sorted(meant)
    missing = [a for a in wanted if not results.get((a, name), CallResult(False)).ok]
    if missing:
        return Condition(
            ADAPTERS_LOADED, False, reasons.ADAPTERS_MISSING, f"missing {', '.join(missing)}"
        )
    return Condition(ADAPTERS_LOADED, True, reasons.ADAPTERS_LOADED, f"holds {', '.join(wanted)}")


def adapter_conditions(
    problem: str | None, desired: int, loaded: int, errors: Sequence[str]
) -> list[Condition]:
    """Ready and Degraded of a LoraAdapter: `problem` (it cannot be served at all), else
    `errors` (failed loads, "pod: message"), else how many of the `desired` pods hold it."""
    if problem:
        return [
            Condition("Ready", False, reasons.INVALID_ADAPTER, problem),
            Condition("Degraded", True, reasons.INVALID_ADAPTER, problem),
        ]
    if errors:
        return [
            Condition("Ready", False, reasons.LOAD_FAILED, f"{loaded}/{desired} pods"),
            Condition("Degraded", True, reasons.LOAD_FAILED, "; ".join(errors)),
        ]
    fine = Condition("Degraded", False, reasons.AS_EXPECTED, "")
    if desired == 0:
        return [Condition("Ready", False, reasons.NO_SERVING_PODS, "no pod serves yet"), fine]
    done = loaded == desired
    reason = reasons.ADAPTERS_LOADED if done else reasons.LOADING
    return [Condition("Ready", done, reason, f"{loaded}/{desired} pods"), fine]


def adapter_status(
    *,
    previous: Mapping[str, Any],
    adapter: AdapterSpec,
    problem: str | None,
    pods: Sequence[str],
    results: Mapping[tuple[str, str], CallResult],
    reports: Mapping[str, ServerReport | None],
    now: str,
) -> dict[str, Any]:
    """The whole status of a LoraAdapter meant for `pods`, after the load calls' `results`.
    A pod's `loadedAt` stays while the same server instance holds the adapter."""
    before = {p.get("pod"): p for p in previous.get("pods") or []}
    entries = []
    for pod in pods:
        result = results.get((adapter.name, pod), CallResult(False, NOT_LOADED_YET))
        report = reports.get(pod)
        entry: dict[str, Any] = {"pod": pod, "loaded": result.ok}
        if report is not None:
            entry["serverInstance"] = report.instance
        old = before.get(pod) or {}
        if result.ok:
            same = old.get("loaded") and old.get("serverInstance") == entry.get("serverInstance")
            entry["loadedAt"] = old.get("loadedAt") if same and old.get("loadedAt") else now
        else:
            entry["lastError"] = result.message
        entries.append(entry)
    desired, loaded = len(entries), sum(e["loaded"] for e in entries)
    errors = [
        f"{e['pod']}: {e['lastError']}"
        for e in entries
        if e.get("lastError") not in (None, NOT_LOADED_YET)
    ]
    conditions: list[dict[str, Any]] = list(previous.get("conditions") or [])
    for cond in adapter_conditions(problem, desired, loaded, errors):
        conditions = set_condition(conditions, cond, now=now, generation=adapter.generation)
    status: dict[str, Any] = {
        "desiredPods": desired,
        "loadedPods": loaded,
        "loadedText": f"{loaded}/{desired}",
        "pods": entries,
        "conditions": conditions,
    }
    if adapter.generation is not None:
        status["observedGeneration"] = adapter.generation
    return status
