"""What the operator does with a child's name, given what the cluster holds (pure)."""

from __future__ import annotations

from vllm_operator.model.drift import child_action, owned_by, with_digest

OWNER = "uid-m"


def obj(kind: str = "Service", *, owner: str | None = OWNER, controller: bool = True,
        deleting: bool = False) -> dict:  # fmt: skip
    meta: dict = {"name": "m", "namespace": "ns"}
    if owner is not None:
        meta["ownerReferences"] = [{"uid": owner, "controller": controller}]
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"kind": kind, "metadata": meta, "spec": {"x": 1}}


def test_someone_elses_object_is_a_conflict_however_it_points_at_us():
    wanted = with_digest(obj())
    assert child_action(wanted, obj(owner=None), OWNER) == "conflict"
    assert child_action(wanted, obj(owner="uid-other"), OWNER) == "conflict"
    # An owner reference to us that does not make us its controller is not ours either.
    assert child_action(wanted, obj(controller=False), OWNER) == "conflict"


def test_ours_is_applied_when_it_drifted_left_when_not_and_waited_for_while_deleted():
    wanted = with_digest(obj())
    assert child_action(wanted, None, OWNER) == "apply"
    assert child_action(wanted, wanted, OWNER) == "none"
    assert child_action(wanted, {**wanted, "spec": {"x": 2}}, OWNER) == "apply"
    assert child_action(wanted, {**wanted, "metadata": obj(deleting=True)["metadata"]}, OWNER) == (
        "wait"
    )


def test_a_claim_is_created_once_and_never_written_again():
    wanted = with_digest(obj("PersistentVolumeClaim"))
    assert child_action(wanted, None, OWNER) == "create"
    assert child_action(wanted, {**obj("PersistentVolumeClaim"), "spec": {"x": 9}}, OWNER) == "none"


def test_no_uid_owns_nothing():
    """A VLLMDeployment read without a uid must not claim objects whose references lack one."""
    assert not owned_by({"metadata": {"ownerReferences": [{"controller": True}]}}, "")
    assert not owned_by({"metadata": {"ownerReferences": [{"uid": "", "controller": True}]}}, "")
