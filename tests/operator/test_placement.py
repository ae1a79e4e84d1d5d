"""The LoRA planner and source checks: pure functions."""

from __future__ import annotations

import pytest

from vllm_operator.model.adapters import (
    AdapterSpec,
    name_clashes,
    parse_adapter,
    server_path,
    source_error,
)
from vllm_operator.model.placement import PodState, plan, pods_meant_for
from vllm_operator.model.spec import Lora


def adapter(name: str, replicas: int | None = None) -> AdapterSpec:
    return AdapterSpec(
        name=name, namespace="ns", uid=f"uid-{name}", generation=1, created="", deployment="d",
        adapter_name=name, source=f"/a/{name}", replicas=replicas,
    )  # fmt: skip


def pods(*names: str, held: dict[str, list[str]] | None = None, max_loras: int = 4):
    held = held or {}
    return [PodState(n, {a: f"/a/{a}" for a in held.get(n, [])}, max_loras) for n in names]


def test_everywhere_adapters_go_on_every_pod():
    assert plan([adapter("a")], pods("p1", "p2")) == {"a": ("p1", "p2")}


def test_limited_adapters_go_to_the_pods_with_most_free_slots():
    placement = plan([adapter("a"), adapter("b", 1), adapter("c", 1)], pods("p1", "p2", "p3"))
    assert placement["a"] == ("p1", "p2", "p3")
    assert placement["b"] == ("p1",)  # all equal: by name
    assert placement["c"] == ("p2",)  # p1 has one slot less now


def test_placement_is_stable_where_adapters_already_are():
    current = pods("p1", "p2", "p3", held={"p3": ["b"]})
    assert plan([adapter("b", 1)], current) == {"b": ("p3",)}


def test_a_pod_that_went_away_is_replaced():
    before = plan([adapter("b", 2)], pods("p1", "p2", "p3"))
    after = plan([adapter("b", 2)], pods("p2", "p3", held={"p2": ["b"]}))
    assert before == {"b": ("p1", "p2")}
    assert after == {"b": ("p2", "p3")}


def test_more_replicas_than_pods_means_all_pods():
    assert plan([adapter("b", 5)], pods("p1", "p2")) == {"b": ("p1", "p2")}


def test_plans_do_not_depend_on_input_order():
    adapters = [adapter("z", 1), adapter("a"), adapter("m", 2)]
    assert plan(adapters, pods("p1", "p2", "p3")) == plan(adapters[::-1], pods("p3", "p1", "p2"))


def test_pods_meant_for_inverts_the_plan():
    assert pods_meant_for({"a": ("p1", "p2"), "b": ("p2",)}) == {"p1": {"a"}, "p2": {"a", "b"}}


LORA = Lora(enabled=True, max_loras=4, max_rank=16, allowed_source_roots=("/adapters",),
            allow_hub=False)  # fmt: skip


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("/adapters/sql", None),
        ("/adapters", None),
        ("/adapters-evil/sql", "outside the allowed roots"),
        ("/etc/x", "outside the allowed roots"),
        ("/adapters/../etc", "not a normalized absolute path"),
        ("/adapters//sql", "not a normalized absolute path"),
        ("adapters/sql", "neither an absolute path"),
        ("hf://org/name", "not allowed here"),
    ],
)
def test_sources_are_checked_against_the_deployment(source: str, error: str | None):
    found = source_error(source, LORA)
    assert (found is None) if error is None else (error in found)


def test_hub_sources_when_allowed_and_paths_anywhere_without_roots():
    open_lora = Lora(True, 4, 16, (), allow_hub=True)
    assert source_error("hf://org/name", open_lora) is None
    assert source_error("/anywhere/x", open_lora) is None
    assert server_path("hf://org/name") == "org/name"
    assert server_path("/a/b") == "/a/b"


def test_parse_adapter_defaults_its_served_name():
    body = {
        "metadata": {"name": "sql", "namespace": "ns", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"deploymentRef": {"name": "d"}, "source": {"uri": "/a"}},
    }
    spec = parse_adapter(body)
    assert (spec.adapter_name, spec.replicas, spec.deleting) == ("sql", None, True)


def test_an_adapter_name_is_served_once_and_never_the_base_models():
    def body(name: str, created: str, adapter_name: str | None = None, deleting: bool = False):
        meta = {"name": name, "namespace": "ns", "creationTimestamp": created}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-02T00:00:00Z"
        spec = {"deploymentRef": {"name": "d"}, "source": {"uri": f"/a/{name}"}}
        return {
            "metadata": meta,
            "spec": spec | ({"adapterName": adapter_name} if adapter_name else {}),
        }

    bodies = [
        body("sql-v2", "2026-01-02T00:00:00Z", adapter_name="sql"),
        body("sql", "2026-01-01T00:00:00Z"),
        body("old", "2025-12-01T00:00:00Z", adapter_name="sql", deleting=True),
        body("chat", "2026-01-01T00:00:00Z", adapter_name="tiny-llama"),
        body("ok", "2026-01-03T00:00:00Z"),
    ]
    clashes = name_clashes([parse_adapter(b) for b in bodies], "tiny-llama")
    assert clashes == {
        "sql-v2": "adapterName 'sql' is taken by LoraAdapter 'sql'",  # the older one keeps it
        "chat": "adapterName 'tiny-llama' is taken by the base model",
    }


def test_each_adapter_takes_one_slot_pods_with_as_many_free_tie_by_name():
    # p1 has one slot more; after "a" takes one there, p1 and p2 have as many free.
    bigger = [PodState("p1", {}, 4), PodState("p2", {}, 3)]
    assert plan([adapter("a", 1), adapter("b", 1)], bigger) == {"a": ("p1",), "b": ("p1",)}
    # ...and after "b" too, p2 has more free: "c" goes there.
    placed = plan([adapter("a", 1), adapter("b", 1), adapter("c", 1)], bigger)
    assert placed["c"] == ("p2",)


def test_parse_adapter_reads_every_field():
    body = {
        "metadata": {"name": "sql", "namespace": "ns", "uid": "u1", "generation": 4,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"deploymentRef": {"name": "d"}, "adapterName": "sql-v2",
                 "source": {"uri": "/adapters/sql"}, "replicas": 2},
    }  # fmt: skip
    assert parse_adapter(body) == AdapterSpec(
        name="sql", namespace="ns", uid="u1", generation=4, created="2026-01-01T00:00:00Z",
        deployment="d", adapter_name="sql-v2", source="/adapters/sql", replicas=2,
        deleting=False,
    )  # fmt: skip


def test_parse_adapter_defaults_what_a_new_object_lacks():
    body = {"metadata": {"name": "sql", "namespace": "ns"},
            "spec": {"deploymentRef": {"name": "d"}, "source": {"uri": "/a"}}}  # fmt: skip
    spec = parse_adapter(body)
    assert (spec.uid, spec.generation, spec.created, spec.replicas) == ("", None, "", None)


@pytest.mark.parametrize("root", ["/adapters", "/adapters/"])
@pytest.mark.parametrize("source", ["/adapters", "/adapters/", "/adapters/sql", "/adapters/sql/"])
def test_roots_and_sources_may_end_in_a_slash(root: str, source: str):
    lora = Lora(True, 4, 16, allowed_source_roots=(root,), allow_hub=False)
    assert source_error(source, lora) is None


def test_a_source_outside_the_roots_names_them_all():
    lora = Lora(True, 4, 16, allowed_source_roots=("/adapters", "/shared/lora"), allow_hub=False)
    assert source_error("/etc/x", lora) == (
        "source '/etc/x' is outside the allowed roots /adapters, /shared/lora"
    )


def test_only_slashes_are_trimmed_from_roots_and_sources():
    # Only a trailing slash is dropped (rstrip strips a set of characters, not a suffix).
    lora = Lora(True, 4, 16, allowed_source_roots=("/models/ONNX/",), allow_hub=False)
    assert source_error("/models/ONNX", lora) is None
    assert source_error("/models/ONNX/sql-X", lora) is None
    assert source_error("/models/ONN/sql", lora) is not None
