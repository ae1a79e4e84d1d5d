"""The LoRA core, pure: every LoraAdapter condition reason, every readiness-gate reason, what makes
a deployment unable to serve adapters, and the calls that converge the pods. No server, no API."""

from __future__ import annotations

import pytest

from vllm_operator.model import reasons
from vllm_operator.model.adapters import (
    AdapterSpec,
    CallResult,
    ServerReport,
    adapter_problems,
    lora_deployment,
    problems_left,
)
from vllm_operator.model.builders import ADAPTERS_LOADED
from vllm_operator.model.placement import Call, calls_to_converge
from vllm_operator.model.status import (
    NOT_LOADED_YET,
    Condition,
    adapter_conditions,
    adapter_gate,
    adapter_status,
)
from vllm_testkit.samples import IMAGES, vllmd

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
LORA_ON = {"model": {"uri": "/m", "servedName": "base"}, "lora": {"enabled": True}}


def adapter(name: str, *, source: str | None = None, adapter_name: str | None = None,
            deleting: bool = False, created: str = T0) -> AdapterSpec:  # fmt: skip
    return AdapterSpec(
        name=name, namespace="ns", uid=f"uid-{name}", generation=3, created=created,
        deployment="d", adapter_name=adapter_name or name, source=source or f"/a/{name}",
        replicas=None, deleting=deleting,
    )  # fmt: skip


def reasons_of(conditions) -> dict[str, tuple[bool, str]]:
    return {c.type: (c.status, c.reason) for c in conditions}


# --- LoraAdapter conditions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("problem", "desired", "loaded", "errors", "ready", "degraded"),
    [
        (
            "no deployment",
            2,
            0,
            [],
            (False, reasons.INVALID_ADAPTER),
            (True, reasons.INVALID_ADAPTER),
        ),
        (None, 2, 1, ["p2: 404: gone"], (False, reasons.LOAD_FAILED), (True, reasons.LOAD_FAILED)),
        (None, 0, 0, [], (False, reasons.NO_SERVING_PODS), (False, reasons.AS_EXPECTED)),
        (None, 2, 1, [], (False, reasons.LOADING), (False, reasons.AS_EXPECTED)),
        (None, 2, 2, [], (True, reasons.ADAPTERS_LOADED), (False, reasons.AS_EXPECTED)),
    ],
    ids=["InvalidAdapter", "LoadFailed", "NoServingPods", "Loading", "AdaptersLoaded"],
)
def test_every_lora_adapter_reason(problem, desired, loaded, errors, ready, degraded):
    got = reasons_of(adapter_conditions(problem, desired, loaded, errors))
    assert got == {"Ready": ready, "Degraded": degraded}


def test_condition_messages_say_what_is_wrong():
    ready, degraded = adapter_conditions(None, 3, 1, ["p2: 400: rank 16 > 8", "p3: unreachable"])
    assert ready.message == "1/3 pods"
    assert degraded.message == "p2: 400: rank 16 > 8; p3: unreachable"
    ready, degraded = adapter_conditions("adapterName 'x' is taken", 3, 0, [])
    assert ready.message == degraded.message == "adapterName 'x' is taken"


def test_status_keeps_loaded_at_while_the_same_server_holds_the_adapter():
    sql = adapter("sql")
    reports = {"p1": ServerReport("i1", {"sql": "/a/sql"}), "p2": ServerReport("i2", {})}
    results = {("sql", "p1"): CallResult(True), ("sql", "p2"): CallResult(True)}
    first = adapter_status(previous={}, adapter=sql, problem=None, pods=("p1", "p2"),
                           results=results, reports=reports, now=T0)  # fmt: skip
    assert [e["loadedAt"] for e in first["pods"]] == [T0, T0]
    assert (first["desiredPods"], first["loadedPods"], first["loadedText"]) == (2, 2, "2/2")
    assert first["observedGeneration"] == 3
    # p2's server restarted (a new instance) and got the adapter again: a new loadedAt.
    restarted = {**reports, "p2": ServerReport("i2-new", {})}
    second = adapter_status(previous=first, adapter=sql, problem=None, pods=("p1", "p2"),
                            results=results, reports=restarted, now=T1)  # fmt: skip
    assert [(e["serverInstance"], e["loadedAt"]) for e in second["pods"]] == [
        ("i1", T0),
        ("i2-new", T1),
    ]
    ready = next(c for c in second["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == T0  # still True: no transition


def test_a_pod_not_called_yet_is_loading_not_failed():
    status = adapter_status(previous={}, adapter=adapter("sql"), problem=None, pods=("p1",),
                            results={}, reports={"p1": None}, now=T0)  # fmt: skip
    assert status["pods"] == [{"pod": "p1", "loaded": False, "lastError": NOT_LOADED_YET}]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reasons.LOADING)


# --- the readiness gate ---------------------------------------------------------------------


def pod(name: str = "p1", *, ready: bool = True, deleting: bool = False) -> dict:
    meta = {"name": name, "namespace": "ns"} | ({"deletionTimestamp": T0} if deleting else {})
    statuses = [{"name": "server", "ready": ready}]
    return {"metadata": meta, "status": {"containerStatuses": statuses}}


HOLDS = ServerReport("i1", {"sql": "/a/sql"})


@pytest.mark.parametrize(
    ("body", "report", "meant", "results", "active", "expected"),
    [
        (pod(), HOLDS, ["sql"], {("sql", "p1"): CallResult(True)}, True,
         (True, reasons.ADAPTERS_LOADED, "holds sql")),
        (pod(), HOLDS, ["chat", "sql"], {("sql", "p1"): CallResult(True),
                                         ("chat", "p1"): CallResult(False, "404")}, True,
         (False, reasons.ADAPTERS_MISSING, "missing chat")),
        (pod(), HOLDS, [], {}, True, (True, reasons.NO_ADAPTERS, "no LoRA adapter is meant for this pod")),
        (pod(ready=False), None, ["sql"], {}, True,
         (False, reasons.SERVER_NOT_READY, "waiting for the server to serve")),
        (pod(ready=False), None, [], {}, False,
         (True, reasons.NO_ADAPTERS, "no LoRA adapter is meant for this pod")),
    ],
    ids=["AdaptersLoaded", "AdaptersMissing", "NoAdapters", "ServerNotReady", "NoAdaptersAtAll"],
)  # fmt: skip
def test_every_gate_reason(body, report, meant, results, active, expected):
    verdict = adapter_gate(body, report, meant, results, adapters_active=active)
    assert verdict is not None
    assert verdict.type == ADAPTERS_LOADED
    assert (verdict.status, verdict.reason, verdict.message) == expected


def test_gate_left_alone_for_a_pod_going_away_or_a_ready_server_that_did_not_answer():
    assert adapter_gate(pod(deleting=True), HOLDS, ["sql"], {}, adapters_active=True) is None
    # The kubelet says the container serves, yet it did not answer us (a timeout, a rotated
    # API key): not a restart, so the gate keeps what it had.
    assert adapter_gate(pod(ready=True), None, ["sql"], {}, adapters_active=True) is None


# --- why adapters cannot be served ------------------------------------------------------------


def test_deployments_that_cannot_serve_adapters_say_why():
    assert lora_deployment("d", None, IMAGES) == (None, "VLLMDeployment 'd' not found")
    spec, why = lora_deployment("d", vllmd("d", {"model": {"uri": "/m"}}), IMAGES)
    assert (spec, why) == (None, "VLLMDeployment 'd' has spec.lora.enabled false")
    bad = vllmd("d", {**LORA_ON, "accelerator": "CPU", "gpusPerReplica": 1})
    spec, why = lora_deployment("d", bad, IMAGES)
    assert spec is None and why.startswith("VLLMDeployment 'd' is invalid: accelerator CPU")
    spec, why = lora_deployment("d", vllmd("d", LORA_ON), IMAGES)
    assert why is None and spec.lora.enabled


def test_problems_name_each_adapter_that_cannot_be_served():
    spec, _ = lora_deployment("d", vllmd("d", LORA_ON), IMAGES)
    adapters = [
        adapter("sql"),
        adapter("up", source="/a/../etc"),
        adapter("hub", source="hf://org/x"),
        adapter("base", adapter_name="base"),
    ]
    assert adapter_problems(adapters, spec, None) == {
        "up": "source '/a/../etc' is not a normalized absolute path",
        "hub": "hf:// adapters are not allowed here (spec.lora.allowHub)",
        "base": "adapterName 'base' is taken by the base model",
    }
    assert adapter_problems(adapters[:2], None, "gone") == {"sql": "gone", "up": "gone"}


def test_problems_left_drive_the_retries():
    adapters = [adapter("sql"), adapter("bad"), adapter("old", deleting=True)]
    results = {("sql", "p1"): CallResult(False, "404: nope"), ("sql", "p2"): CallResult(True)}
    left = problems_left(adapters, {"bad": "invalid"}, results, {"old": ["unload on p1: 500"]})
    assert left == {"sql": ["p1: 404: nope"], "bad": ["invalid"], "old": ["unload on p1: 500"]}


# --- converging ---------------------------------------------------------------------------------


def test_calls_load_what_is_missing_reload_what_changed_and_unload_what_is_not_meant():
    sql, chat = adapter("sql", source="/a/sql-v2"), adapter("chat")
    old = adapter("old", deleting=True)
    servers = {
        "p1": ServerReport("i1", {"sql": "/a/sql", "chat": "/a/chat", "old": "/a/old"}),
        "p2": ServerReport("i2", {"theirs": "/x", "chat": "/a/chat"}),
    }
    placement = {"sql": ("p1", "p2"), "chat": ("p1",)}
    calls, in_place = calls_to_converge(servers, [sql, chat, old], placement)
    assert calls == [
        Call("p1", "sql", "/a/sql-v2", inplace=True, adapter="sql"),  # the source changed
        Call("p1", "old"),  # its LoraAdapter is being deleted
        Call("p2", "sql", "/a/sql-v2", inplace=False, adapter="sql"),
        Call("p2", "chat"),  # meant for p1 only; "theirs" is nobody's LoraAdapter: left alone
    ]
    assert in_place == {("chat", "p1"): CallResult(True)}


# --- messages and edge cases `make mutate` found untested ---------------------------------------


@pytest.mark.parametrize(
    ("problem", "desired", "loaded", "errors", "expected"),
    [
        (None, 0, 0, [], [Condition("Ready", False, reasons.NO_SERVING_PODS, "no pod serves yet")]),
        (None, 3, 1, [], [Condition("Ready", False, reasons.LOADING, "1/3 pods")]),
        (None, 3, 3, [], [Condition("Ready", True, reasons.ADAPTERS_LOADED, "3/3 pods")]),
    ],
    ids=["NoServingPods", "Loading", "AdaptersLoaded"],
)
def test_fine_adapter_conditions_with_their_messages(problem, desired, loaded, errors, expected):
    fine = Condition("Degraded", False, reasons.AS_EXPECTED, "")
    assert adapter_conditions(problem, desired, loaded, errors) == [*expected, fine]


def test_gate_messages_list_every_adapter_in_name_order():
    both = {("sql", "p1"): CallResult(True), ("chat", "p1"): CallResult(True)}
    verdict = adapter_gate(pod(), HOLDS, ["sql", "chat"], both, adapters_active=True)
    assert verdict == Condition(ADAPTERS_LOADED, True, reasons.ADAPTERS_LOADED, "holds chat, sql")
    failed = {("sql", "p1"): CallResult(False, "500"), ("chat", "p1"): CallResult(False, "404")}
    verdict = adapter_gate(pod(), HOLDS, ["sql", "chat"], failed, adapters_active=True)
    assert verdict == Condition(
        ADAPTERS_LOADED, False, reasons.ADAPTERS_MISSING, "missing chat, sql"
    )


def test_gate_counts_an_adapter_not_called_yet_as_missing():
    verdict = adapter_gate(pod(), HOLDS, ["sql"], {}, adapters_active=True)
    assert verdict == Condition(ADAPTERS_LOADED, False, reasons.ADAPTERS_MISSING, "missing sql")


def test_status_reports_failed_loads_per_pod():
    results = {("sql", "p1"): CallResult(False, "404: gone"), ("sql", "p2"): CallResult(True)}
    reports = {"p1": ServerReport("i1", {}), "p2": ServerReport("i2", {"sql": "/a/sql"})}
    status = adapter_status(previous={}, adapter=adapter("sql"), problem=None, pods=("p1", "p2"),
                            results=results, reports=reports, now=T0)  # fmt: skip
    assert status["pods"] == [
        {"pod": "p1", "loaded": False, "serverInstance": "i1", "lastError": "404: gone"},
        {"pod": "p2", "loaded": True, "serverInstance": "i2", "loadedAt": T0},
    ]
    assert status["conditions"] == [
        {"type": "Ready", "status": "False", "reason": reasons.LOAD_FAILED, "message": "1/2 pods",
         "lastTransitionTime": T0, "observedGeneration": 3},
        {"type": "Degraded", "status": "True", "reason": reasons.LOAD_FAILED,
         "message": "p1: 404: gone", "lastTransitionTime": T0, "observedGeneration": 3},
    ]  # fmt: skip


def test_status_of_an_adapter_that_cannot_be_served():
    status = adapter_status(previous={}, adapter=adapter("sql"), problem="no deployment",
                            pods=(), results={}, reports={}, now=T0)  # fmt: skip
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in status["conditions"]] == [
        ("Ready", "False", reasons.INVALID_ADAPTER, "no deployment"),
        ("Degraded", "True", reasons.INVALID_ADAPTER, "no deployment"),
    ]
    assert (status["desiredPods"], status["loadedPods"], status["loadedText"]) == (0, 0, "0/0")


def test_without_a_deployment_or_a_reason_every_adapter_has_no_deployment():
    adapters = [adapter("sql"), adapter("chat")]
    assert adapter_problems(adapters, None, None) == {
        "sql": "no deployment",
        "chat": "no deployment",
    }


def test_an_adapter_being_deleted_with_every_unload_done_has_nothing_left():
    left = problems_left([adapter("old", deleting=True)], {}, {}, {})
    assert left == {"old": []}


def test_a_pod_meant_to_hold_nothing_unloads_all_of_ours_and_keeps_the_rest():
    servers = {"p1": ServerReport("i1", {"sql": "/a/sql", "chat": "/a/chat", "theirs": "/x"})}
    calls, in_place = calls_to_converge(servers, [adapter("sql"), adapter("chat")], {})
    assert calls == [Call("p1", "chat"), Call("p1", "sql")]
    assert in_place == {}
