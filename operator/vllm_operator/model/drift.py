"""Comparing what the operator wants with what the cluster holds (pure): whether a child is ours
to write at all, whether it drifted, the digest that makes removed fields count as a change."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from .. import GROUP

APPLIED = f"{GROUP}/applied"  # annotation: digest of the object as last applied

# Where the API server rewrites quantities into their canonical form (2 -> "2", "0.5" -> "500m",
# "1024Mi" -> "1Gi", an HPA's averageValue "4000" -> "4k"): compared by value there, or every
# reconcile would see drift and apply.
QUANTITY_KEYS = frozenset({"resources", "sizeLimit", "averageValue"})


def drifted(wanted: Any, actual: Any, *, quantities: bool = False) -> bool:
    """Whether `actual` lacks something of `wanted`. The API server adds defaults (also inside
    list items), so `actual` may hold more; lists must match item by item."""
    if isinstance(wanted, Mapping):
        return not isinstance(actual, Mapping) or any(
            k not in actual or drifted(v, actual[k], quantities=quantities or k in QUANTITY_KEYS)
            for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            not isinstance(actual, list)
            or len(wanted) != len(actual)
            or any(
                drifted(w, a, quantities=quantities) for w, a in zip(wanted, actual, strict=True)
            )
        )
    if wanted != actual and quantities and (value := _quantity(wanted)) is not None:
        return value != _quantity(actual)
    return wanted != actual


def _quantity(value: Any) -> Decimal | None:
    try:
        return parse_quantity(value)
    except (ValueError, TypeError):
        return None


def with_digest(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` annotated with a digest of itself: a change of the wanted object, removals
    included (which a comparison with the live object cannot see), changes the digest."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    meta = obj["metadata"]
    return {
        **obj,
        "metadata": {**meta, "annotations": {**meta.get("annotations", {}), APPLIED: digest}},
    }


def needs_apply(wanted: Mapping[str, Any], actual: Mapping[str, Any] | None) -> bool:
    """Whether `wanted` (with its digest) must be applied over `actual` (None: missing)."""
    return actual is None or drifted({k: v for k, v in wanted.items() if k != "apiVersion"}, actual)


# Created when missing, never written again: a claim's size or class may only grow or not change
# at all, and the data on it outlives any spec change.
CREATE_ONLY = frozenset({"PersistentVolumeClaim"})


def child_action(wanted: Mapping[str, Any], actual: Mapping[str, Any] | None, owner: str) -> str:
    """What to do with the child `wanted` (with its digest) of the object with uid `owner`,
    given what the cluster holds under its name: "create" or "apply" it, leave it ("none"),
    "wait" while it is being deleted, or "conflict": an object of that name not controlled by
    the owner is someone else's, never applied over, adopted or deleted."""
    if actual is None:
        return "create" if wanted["kind"] in CREATE_ONLY else "apply"
    if not owned_by(actual, owner):
        return "conflict"
    if (actual.get("metadata") or {}).get("deletionTimestamp"):
        return "wait"  # ours, going away (a foreground deletion): write it once it is gone
    if wanted["kind"] in CREATE_ONLY:
        return "none"
    return "apply" if needs_apply(wanted, actual) else "none"


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether the object with `uid` controls `obj` (its controller owner reference)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(ref.get("uid") == uid and ref.get("controller") for ref in refs)
