"""Pure status logic: conditions in the metav1.Condition shape, and a VLLMDeployment's status
from its Deployment's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import reasons


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
    cond = {
        "type": new.type,
        "status": status,
        "reason": new.reason,
        "message": new.message,
        "lastTransitionTime": when,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def pod_gate_condition(
    pod: Mapping[str, Any], gate: str, *, passing: bool, reason: str, message: str, now: str
) -> dict[str, Any] | None:
    """The readiness-gate condition to write on `pod`, or None if the pod does not carry the
    gate or already has the condition with this status."""
    gates = [g.get("conditionType") for g in (pod.get("spec") or {}).get("readinessGates") or []]
    if gate not in gates:
        return None
    current = get_condition((pod.get("status") or {}).get("conditions") or [], gate)
    status = "True" if passing else "False"
    if current is not None and current.get("status") == status:
        return None
    return {
        "type": gate,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }


def get_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def _deployment_condition(deployment: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return get_condition((deployment.get("status") or {}).get("conditions") or [], type_) or {}


def deployment_conditions(
    desired: int, deployment: Mapping[str, Any] | None, problem: Condition | None
) -> list[Condition]:
    """Available, Progressing and Degraded of a VLLMDeployment whose Deployment is `deployment`
    (None: not created yet) and whose reconcile hit `problem` (None: applied fine)."""
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
) -> dict[str, Any]:
    """The whole status of a VLLMDeployment."""
    status = (deployment or {}).get("status") or {}
    ready = status.get("readyReplicas", 0)
    conditions: list[dict[str, Any]] = list(previous.get("conditions") or [])
    for cond in deployment_conditions(desired, deployment, problem):
        conditions = set_condition(conditions, cond, now=now, generation=generation)
    out: dict[str, Any] = {
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


def transitions(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The notable transitions, which deserve an event: conditions of `after` whose status
    flipped since `before`, and a new Degraded=True (a first status is otherwise no news)."""
    old = {c.get("type"): c.get("status") for c in before}
    return [
        c
        for c in after
        if (c.get("type") in old and old[c.get("type")] != c.get("status"))
        or (c.get("type") not in old and c.get("type") == "Degraded" and c.get("status") == "True")
    ]
