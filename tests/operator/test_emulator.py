"""The emulated API server answers label selectors as a real one does, so the operator's
server-side filtering is what the tests exercise (no client-side "kmock-proof" filtering)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from kmock import Server as kmock_server

from vllm_testkit.kube_bench import BenchEmulator
from vllm_testkit.kube_emulator import (
    MERGE,
    KubeEmulator,
    create,
    declare,
    label_selector,
    selects,
)


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


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_a_watch_sees_objects_leave_and_enter_its_label_selection(kmock):
    """As a real API server's watch: stripping the labels is a DELETED event for a watch by
    them, putting them back an ADDED one (the operator's cache forgets and relearns the object
    from those)."""
    declare(kmock)
    pod = {"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "vllm"}}}
    await create(kmock, "/api/v1/namespaces/ns/pods", pod)
    path = "/api/v1/namespaces/ns/pods/a"
    params = {"watch": "true", "labelSelector": "app=vllm"}
    async with aiohttp.ClientSession() as session:
        url = f"{str(kmock.url).rstrip('/')}/api/v1/namespaces/ns/pods"
        async with session.get(url, params=params) as stream:

            async def next_event() -> tuple[str, dict]:
                while not (line := await asyncio.wait_for(stream.content.readline(), 5)).strip():
                    pass
                event = json.loads(line)
                return event["type"], event["object"]["metadata"].get("labels") or {}

            assert await next_event() == ("ADDED", {"app": "vllm"})
            for labels, seen in [({"app": None}, ("DELETED", {})),
                                 ({"other": "x"}, None),  # still out: nothing
                                 ({"app": "vllm"}, ("ADDED", {"app": "vllm", "other": "x"})),
                                 ({"other": "y"}, ("MODIFIED", {"app": "vllm", "other": "y"}))]:  # fmt: skip
                patch = {"metadata": {"labels": labels}}
                assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200
                if seen is not None:
                    assert await next_event() == seen


@pytest.mark.asyncio
@pytest.mark.parametrize("emulator", [KubeEmulator, BenchEmulator])
async def test_the_bench_emulator_finds_objects_as_kmock_does(emulator):
    """The benchmarks' emulator looks objects up in an index instead of kmock's scan of every
    object: the same answers (a name in two namespaces and two kinds, lists by namespace and
    cluster-wide, a deletion and a re-creation)."""
    async with emulator() as kmock, kmock_server(kmock):
        declare(kmock)
        for ns in ("a", "b"):
            pod = {"metadata": {"name": "x", "namespace": ns}, "spec": {"ns": ns}}
            await create(kmock, f"/api/v1/namespaces/{ns}/pods", pod)
        svc = {"metadata": {"name": "x", "namespace": "a"}, "spec": {"kind": "svc"}}
        await create(kmock, "/api/v1/namespaces/a/services", svc)

        async def names(path: str) -> list[tuple[str, str]]:
            items = (await (await kmock.get(path)).json())["items"]
            return sorted((i["metadata"]["namespace"], i["metadata"]["name"]) for i in items)

        assert (await (await kmock.get("/api/v1/namespaces/b/pods/x")).json())["spec"] == {
            "ns": "b"
        }
        assert await names("/api/v1/namespaces/a/pods") == [("a", "x")]
        assert await names("/api/v1/pods") == [("a", "x"), ("b", "x")]
        assert await names("/api/v1/services") == [("a", "x")]
        assert (await kmock.get("/api/v1/namespaces/c/pods/x")).status == 404
        assert (await kmock.delete("/api/v1/namespaces/a/pods/x")).status == 200
        assert (await kmock.get("/api/v1/namespaces/a/pods/x")).status == 404
        assert await names("/api/v1/pods") == [("b", "x")]
        await create(
            kmock, "/api/v1/namespaces/a/pods", {"metadata": {"name": "x", "namespace": "a"}}
        )
        assert (await kmock.get("/api/v1/namespaces/a/pods/x")).status == 200
        conflict = await kmock.post("/api/v1/namespaces/a/pods", json={"metadata": {"name": "x"}})
        assert conflict.status == 409
        assert (await conflict.json())["code"] == 409

        # A watch stream (which the bench's emulator stops matching once it began) goes on.
        async with aiohttp.ClientSession() as session:
            url = f"{str(kmock.url).rstrip('/')}/api/v1/namespaces/a/services"
            async with session.get(url, params={"watch": "true"}) as stream:

                async def next_name() -> str:
                    while not (
                        line := await asyncio.wait_for(stream.content.readline(), 5)
                    ).strip():
                        pass
                    return json.loads(line)["object"]["metadata"]["name"]

                assert await next_name() == "x"
                svc = {"metadata": {"name": "y", "namespace": "a"}}
                await create(kmock, "/api/v1/namespaces/a/services", svc)
                assert await next_name() == "y"


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_a_watch_from_a_resource_version_starts_after_it(kmock):
    """As from a real API server: a list says the revision it is as of, and a watch from there
    (Kopf's, after its list and on every reconnect) gets only later changes, not every object
    again as kmock's own watch sends them."""
    declare(kmock)
    for name in ("a", "b"):
        await create(
            kmock, "/api/v1/namespaces/ns/pods", {"metadata": {"name": name, "namespace": "ns"}}
        )
    listed = await (await kmock.get("/api/v1/namespaces/ns/pods")).json()
    since = listed["metadata"]["resourceVersion"]
    assert since == max(p["metadata"]["resourceVersion"] for p in listed["items"])
    await create(
        kmock, "/api/v1/namespaces/ns/pods", {"metadata": {"name": "c", "namespace": "ns"}}
    )
    async with aiohttp.ClientSession() as session:
        url = f"{str(kmock.url).rstrip('/')}/api/v1/namespaces/ns/pods"
        params = {"watch": "true", "resourceVersion": since}
        async with session.get(url, params=params) as stream:
            while not (line := await asyncio.wait_for(stream.content.readline(), 5)).strip():
                pass
            event = json.loads(line)
            assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "c")


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_a_json_patch_whose_test_fails_is_refused_as_by_the_api_server(kmock):
    """Kopf adds its finalizers by a JSON patch that first tests the resourceVersion: a real
    API server refuses a stale one with 422 and changes nothing, and Kopf tries again on the
    object's next event. kmock answered 500, which Kopf's client retries as it is, stale
    version included, for as long as its backoffs last (thousands of requests at rest in the
    scale bench)."""
    declare(kmock)
    await create(
        kmock, "/api/v1/namespaces/ns/pods", {"metadata": {"name": "a", "namespace": "ns"}}
    )
    path = "/api/v1/namespaces/ns/pods/a"
    version = (await (await kmock.get(path)).json())["metadata"]["resourceVersion"]
    patch = {"metadata": {"labels": {"x": "1"}}}
    assert (await kmock.patch(path, json=patch, headers=MERGE)).status == 200

    json_patch = {"Content-Type": "application/json-patch+json"}
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": version},
           {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]  # fmt: skip
    refused = await kmock.patch(path, json=ops, headers=json_patch)
    assert refused.status == 422
    assert (await refused.json())["reason"] == "Invalid"
    current = await (await kmock.get(path)).json()
    assert "finalizers" not in current["metadata"]
    ops[0]["value"] = current["metadata"]["resourceVersion"]
    applied = await kmock.patch(path, json=ops, headers=json_patch)
    assert applied.status == 200
    assert (await applied.json())["metadata"]["finalizers"] == ["f"]


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_an_idle_watch_gets_bookmarks_and_ends_at_its_timeout(kmock):
    """As from a real API server: a watch that asks for bookmarks (Kopf's do) gets one when
    nothing happened for a while (every minute there), with the revision it has seen, so Kopf
    neither takes it for dead after its 70 s inactivity timeout nor replays from an old
    revision; and a watch ends after its `timeoutSeconds` (Kopf asks for 300)."""
    kmock.bookmark_seconds = 0.3
    declare(kmock)
    await create(
        kmock, "/api/v1/namespaces/ns/pods", {"metadata": {"name": "a", "namespace": "ns"}}
    )
    listed = await (await kmock.get("/api/v1/namespaces/ns/pods")).json()
    since = listed["metadata"]["resourceVersion"]
    url = f"{str(kmock.url).rstrip('/')}/api/v1/namespaces/ns/pods"
    async with aiohttp.ClientSession() as session:

        async def events(params: dict[str, str], seconds: float) -> list[tuple[str, str]]:
            seen = []
            async with session.get(url, params={"watch": "true", **params}) as stream:
                async with asyncio.timeout(seconds):
                    async for line in stream.content:
                        if line.strip():
                            event = json.loads(line)
                            seen.append(
                                (event["type"], event["object"]["metadata"]["resourceVersion"])
                            )
            return seen

        bookmarked = {
            "resourceVersion": since,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "1",
        }
        assert (await events(bookmarked, 5))[:2] == [("BOOKMARK", since)] * 2  # then it ended

        async def change() -> None:
            await asyncio.sleep(0.1)
            patch = {"metadata": {"labels": {"x": "1"}}}
            await kmock.patch("/api/v1/namespaces/ns/pods/a", json=patch, headers=MERGE)

        changing = asyncio.create_task(change())
        seen = await events(bookmarked, 5)
        await changing
        modified = seen[0][1]
        assert seen[0][0] == "MODIFIED" and int(modified) > int(since)
        assert seen[1] == ("BOOKMARK", modified)

        with pytest.raises(TimeoutError):  # no bookmarks unless asked for, no end unless told
            await events({"resourceVersion": modified}, 1)
