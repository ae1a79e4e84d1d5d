"""The emulated API server answers label selectors as a real one does, so the operator's
server-side filtering is what the tests exercise (no client-side "kmock-proof" filtering)."""

from __future__ import annotations

import pytest

from vllm_testkit.kube_emulator import KubeEmulator, create, declare, label_selector, selects


def test_label_selector_syntax_of_the_api_server():
    assert label_selector("app=a,tier!=db, env in (x, y),gpu,!legacy,k==v") == [
        ("app", "=", frozenset({"a"})),
        ("tier", "!=", frozenset({"db"})),
        ("env", "in", frozenset({"x", "y"})),
        ("gpu", "exists", frozenset()),
        ("legacy", "!", frozenset()),
        ("k", "=", frozenset({"v"})),
    ]
    assert label_selector("") == []
    assert label_selector("gen>3,gen<10") == [
        ("gen", ">", frozenset({"3"})),
        ("gen", "<", frozenset({"10"})),
    ]
    for bad in ("a=(b", "a=b,", "a in ()", "a in (b"):
        with pytest.raises(ValueError):
            label_selector(bad)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("tier!=db", {}, True),  # a missing label is "not equal"
        ("tier notin (db)", {}, True),
        ("tier=db", {}, False),
        ("tier in (db, web)", {"tier": "web"}, True),
        ("gpu", {"gpu": ""}, True),
        ("!gpu", {"gpu": ""}, False),
        ("gen>3", {"gen": "4"}, True),
        ("gen>3", {"gen": "x"}, False),
        ("gen<3", {}, False),
    ],
)
def test_requirements_match_as_apimachinery_does(selector, labels, matches):
    assert selects(label_selector(selector), {"metadata": {"labels": labels}}) is matches


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_lists_are_filtered_by_label_selector(kmock):
    declare(kmock)
    for name, labels in {"a": {"app": "vllm", "d": "one"}, "b": {"app": "vllm", "d": "two"},
                         "c": {"app": "other"}}.items():  # fmt: skip
        pod = {"metadata": {"name": name, "namespace": "ns", "labels": labels}}
        await create(kmock, "/api/v1/namespaces/ns/pods", pod)

    async def names(selector: str) -> list[str]:
        response = await kmock.get("/api/v1/namespaces/ns/pods", params={"labelSelector": selector})
        return sorted(p["metadata"]["name"] for p in (await response.json())["items"])

    assert await names("") == ["a", "b", "c"]
    assert await names("app=vllm,d=one") == ["a"]
    assert await names("app=vllm,d notin (one)") == ["b"]
    assert await names("!d") == ["c"]
    response = await kmock.get("/api/v1/namespaces/ns/pods", params={"labelSelector": "a in ()"})
    assert response.status == 400
    assert "needs at least one value" in (await response.json())["message"]
