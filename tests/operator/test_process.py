"""The operator as its own process (`vllm-operator`, as in its pod) against kmock's emulator:
more than one replica through Kopf peering (one works, the other stands by and takes over when
the first one stops), its metrics, and its logs."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys

import httpx
import kmock
import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vllm_operator.reconcile.leadership import configure, leads
from vllm_testkit.kube_emulator import (
    DEPLOYMENT,
    SEEN_CALLS,
    SERVICE,
    KubeEmulator,
    api_calls,
    cr_path,
    create,
    declare,
    wait_for,
)
from vllm_testkit.samples import GOOD
from vllm_testkit.servers import free_port

NS = "models"
CR_PATH = cr_path(NS)
PEERING = kmock.resource("kopf.dev/v1/clusterkopfpeerings")
NAME = "vllm-operator"


def record(priority: int, seconds_ago: float = 0, lifetime: int = 30) -> dict:
    seen = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_leads_as_kopf_decides():
    peering = {"status": {"me": record(50), "low": record(10), "old": record(90, seconds_ago=60)}}
    assert leads(peering, "me", 50)  # the higher one is dead, the other one lower
    assert not leads(peering | {"status": {**peering["status"], "hi": record(51)}}, "me", 50)
    assert not leads({"status": {"me": record(50), "twin": record(50)}}, "me", 50)  # a tie
    assert leads(None, "me", 50)  # no peering object: Kopf pauses nobody
    assert not leads(peering, None, 50)  # identity unknown: our own record looks like a tie


def test_replicas_get_distinct_random_priorities_unless_given():
    first, second, given = kopf.OperatorSettings(), kopf.OperatorSettings(), kopf.OperatorSettings()
    given.peering.priority = 7
    for settings in (first, second, given):
        configure(settings)
    assert first.peering.priority != second.peering.priority  # 1 in 2**31 to tie
    assert first.peering.priority > 0 and given.peering.priority == 7
    assert first.peering.lifetime == 30
    standalone = kopf.OperatorSettings()
    standalone.peering.standalone = True
    configure(standalone)
    assert standalone.peering.priority == 0


class OperatorProcess:
    """`vllm-operator ARGS` as its own process (as in its pod), its log in a file."""

    def __init__(self, pod: str, args: list[str], kubeconfig, log, extra_env=None) -> None:
        self.metrics_port = free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_ID": pod}
        env["VLLM_OPERATOR_METRICS_PORT"] = str(self.metrics_port)
        env["VLLM_OPERATOR_DRIFT_CHECK_SECONDS"] = "0.5"  # the drift loop asks who leads
        env.pop("KUBERNETES_SERVICE_HOST", None)
        env |= extra_env or {}
        self.log_path = log
        self.terminated = False
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm_operator", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float | None:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    return sample.value
        return None

    def terminate(self) -> None:
        """SIGTERM, once: a second one while Kopf shuts down would kill it outright (Kopf
        restores the default handler), as a kubelet never does within the grace period."""
        if not self.terminated:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.terminated = True

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def exists(emulator, resource, name: str) -> bool:
    key = (resource, NS, name)
    return key in emulator.objects and not emulator.objects[key].deleted


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_one_replica_works_and_the_other_takes_over(kmock, kubeconfig, tmp_path):
    declare(kmock)
    response = await kmock.post(
        "/apis/kopf.dev/v1/clusterkopfpeerings",
        json={
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": NAME},
        },
    )
    assert response.status == 200
    peering = [f"--peering={NAME}", "--verbose"]  # verbose: each handler call in the log
    leader = OperatorProcess("leader", [*peering, "--priority=200"], kubeconfig, tmp_path / "l.log")
    standby = None

    def peers() -> set[str]:
        return set(kmock.objects[PEERING, None, NAME].get("status") or {})

    def drift_checks() -> int:  # the drift loops reading the peering object
        return sum(
            str(r.url).endswith(f"/clusterkopfpeerings/{NAME}") and r.method.value == "GET"
            for r in kmock
        )

    try:
        # The standby starts once the leader's record is there. With --peering, Kopf starts
        # paused and resumes only if it sees no higher peer: had the standby started first, it
        # would work until the leader's record reached it, and a CR created in between (after
        # both records exist, before the standby saw the leader's) would be handled twice.
        await wait_for(lambda: peers() == {"leader"}, timeout=60, what="the leader's record")
        standby = OperatorProcess(
            "standby", [*peering, "--priority=100"], kubeconfig, tmp_path / "s.log"
        )
        await wait_for(lambda: peers() == {"leader", "standby"}, timeout=60, what="both peers")
        await create(
            kmock, CR_PATH, GOOD["cpu-tiny"] | {"metadata": {"name": "one", "namespace": NS}}
        )
        await wait_for(lambda: exists(kmock, SERVICE, "one"), timeout=30, what="Service one")
        await wait_for(lambda: "[models/one] Handler" in leader.log(), what="the leader's log")
        await wait_for(lambda: leader.metric("vllm_operator_leader") == 1, what="leader metric")
        await wait_for(lambda: standby.metric("vllm_operator_leader") == 0, what="standby metric")
        ok = {"kind": "VLLMDeployment", "result": "ok"}
        reconciled = lambda: leader.metric("vllm_operator_reconciles_total", **ok)  # noqa: E731
        await wait_for(lambda: (reconciled() or 0) >= 1, what="a reconcile counted")
        assert leader.metric("vllm_operator_applies_total", kind="Deployment") == 1
        assert standby.metric("vllm_operator_reconciles_total", **ok) is None  # never ran

        # The leader hangs, its record still alive: the standby's handlers are paused and its
        # drift loop stands by, so a deleted Service stays deleted.
        leader.proc.send_signal(signal.SIGSTOP)
        await kmock.delete(f"/api/v1/namespaces/{NS}/services/one")
        checks = drift_checks()
        await wait_for(lambda: drift_checks() >= checks + 3, what="three drift rounds")
        assert not exists(kmock, SERVICE, "one")
        assert "[models/one]" not in standby.log()
        leader.proc.send_signal(signal.SIGCONT)  # and comes back: it repairs
        await wait_for(lambda: exists(kmock, SERVICE, "one"), timeout=30, what="Service one back")

        # The leader stops (a rollout, a drain): it leaves the peering, the standby resumes.
        leader.terminate()
        await wait_for(lambda: peers() == {"standby"}, timeout=30, what="the leader gone")
        await create(
            kmock, CR_PATH, GOOD["cpu-tiny"] | {"metadata": {"name": "two", "namespace": NS}}
        )
        await wait_for(lambda: exists(kmock, DEPLOYMENT, "two"), timeout=30, what="Deployment two")
        await wait_for(lambda: "[models/two] Handler" in standby.log(), what="the standby's log")
        await wait_for(lambda: standby.metric("vllm_operator_leader") == 1, what="it leads")
    finally:
        # Waited for in threads: the emulator serves from this event loop, and an operator
        # finishing its work on SIGTERM needs it to answer.
        running = [p for p in (leader, standby) if p is not None]
        codes = await asyncio.gather(*(asyncio.to_thread(p.stop) for p in running))
        SEEN_CALLS.update(api_calls(kmock))
    assert codes == [0, 0], "both exit cleanly on SIGTERM, the standby leaving the peering"
    assert peers() == set()


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VLLM_OPERATOR_DRIFT_CHECK_SECONDS": "soon"},
         "VLLM_OPERATOR_DRIFT_CHECK_SECONDS='soon': seconds, above 0"),
        # The admin key the chart mounts, missing: no silent fallback to a key of its own.
        ({"VLLM_OPERATOR_ADMIN_KEY_FILE": "/nonexistent/private-key.pem"},
         "VLLM_OPERATOR_ADMIN_KEY_FILE: /nonexistent/private-key.pem: No such file or directory"),
    ],
)  # fmt: skip
async def test_a_bad_setting_stops_the_operator_naming_it(
    kmock, kubeconfig, tmp_path, env, message
):
    declare(kmock)
    operator = OperatorProcess("one", ["--standalone"], kubeconfig, tmp_path / "o.log", env)
    try:
        code = await asyncio.to_thread(operator.proc.wait, 30)
    finally:
        operator.stop()
    assert code != 0
    assert message in operator.log()


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_logs_are_json_and_quiet_by_default(kmock, kubeconfig, tmp_path):
    """As the chart runs it: a JSON line per change the operator made, not one per handler."""
    declare(kmock)
    operator = OperatorProcess(
        "one", ["--standalone", "--log-format=json"], kubeconfig, tmp_path / "o.log"
    )
    try:
        await wait_for(
            lambda: "Activity 'startup' succeeded" in operator.log(), timeout=30, what="start"
        )
        await create(
            kmock, CR_PATH, GOOD["cpu-tiny"] | {"metadata": {"name": "one", "namespace": NS}}
        )
        await wait_for(
            lambda: "reconciled one" in operator.log(), timeout=30, what="the change logged"
        )
        await asyncio.sleep(1)  # the handlers' own lines would be there by now
    finally:
        code = await asyncio.to_thread(operator.stop)
    assert code == 0
    lines = [json.loads(line) for line in operator.log().splitlines() if line.strip()]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("reconciled one: applied") for m in messages), messages
    assert not any("Handler " in m for m in messages), messages


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_an_operator_of_listed_namespaces_serves_those_and_reads_nothing_else(
    kmock, kubeconfig, tmp_path
):
    """`--namespace` for each served namespace, as the chart runs it with
    operator.watchNamespaces (and more than one replica: peering in each namespace): a CR there
    is served, one elsewhere is not, and every request it sends (Kopf's and its own, the drift
    loop and the leadership check included) is to a served namespace: the chart's Roles there
    cover it all (tests/chart checks them against the record this adds to)."""
    declare(kmock)
    served = ("team-a", "team-b")
    for namespace in served:  # the chart creates one in each
        peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                   "metadata": {"name": NAME, "namespace": namespace}}  # fmt: skip
        path = f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings"
        assert (await kmock.post(path, json=peering)).status == 200
    args = [f"--peering={NAME}", *(f"--namespace={ns}" for ns in served)]
    operator = OperatorProcess("one", args, kubeconfig, tmp_path / "o.log")
    peerings = kmock.resource("kopf.dev/v1/kopfpeerings")

    def peers(namespace: str) -> set[str]:
        return set(kmock.objects[peerings, namespace, NAME].get("status") or {})

    def drift_checks() -> int:  # the drift loop's leadership check reads both peerings
        return sum(
            str(r.url).endswith(f"/namespaces/team-b/kopfpeerings/{NAME}") and r.method.value == "GET"
            for r in kmock
        )  # fmt: skip

    def served_here(namespace: str, name: str) -> bool:
        key = (SERVICE, namespace, name)
        return key in kmock.objects and not kmock.objects[key].deleted

    try:
        await wait_for(lambda: all(peers(ns) == {"one"} for ns in served), timeout=60,
                       what="its record in both namespaces")  # fmt: skip
        for namespace in (*served, "team-c"):
            body = GOOD["cpu-tiny"] | {"metadata": {"name": "m", "namespace": namespace}}
            path = f"/apis/serving.vllm.ai/v1alpha1/namespaces/{namespace}/vllmdeployments"
            await create(kmock, path, body)
        for namespace in served:
            await wait_for(
                lambda ns=namespace: served_here(ns, "m"), timeout=30, what=f"{namespace}/m"
            )
        await wait_for(lambda: operator.metric("vllm_operator_leader") == 1, what="it leads")
        checks = drift_checks()
        await wait_for(lambda: drift_checks() >= checks + 2, what="two drift rounds")
    finally:
        code = await asyncio.to_thread(operator.stop)
        SEEN_CALLS.update(api_calls(kmock))
    assert code == 0
    assert all(peers(ns) == set() for ns in served), "it left both peerings"
    assert not served_here("team-c", "m")
    assert (
        "status"
        not in kmock.objects[
            kmock.resource("serving.vllm.ai/v1alpha1/vllmdeployments"), "team-c", "m"
        ]
    )
    # Every request of the operator's (Kopf's and its own client's, not the test's) was to a
    # served namespace: no Namespace or CRD listing, no ClusterKopfPeering, no list across all.
    requests = [
        (r.method.value, r.url.path, r.namespace)
        for r in kmock
        if r.resource is not None
        and r.resource.plural
        and not r.headers.get("User-Agent", "").startswith("kmock")
    ]
    assert requests
    assert [r for r in requests if r[2] not in served] == []
    assert {(ns, plural) for _, path, ns in requests for plural in ["vllmdeployments"]
            if path.endswith("/vllmdeployments")} == {(ns, "vllmdeployments") for ns in served}  # fmt: skip


@pytest.mark.asyncio
@pytest.mark.kmock(cls=KubeEmulator)
async def test_a_namespace_pattern_stops_the_operator_naming_it(kmock, kubeconfig, tmp_path):
    """Kopf would resolve a pattern by listing the cluster's namespaces; the operator serves
    exact names only, and reads nothing cluster-wide."""
    declare(kmock)
    args = ["--standalone", "--namespace=team-a", "--namespace=team-*"]
    operator = OperatorProcess("one", args, kubeconfig, tmp_path / "o.log")
    try:
        code = await asyncio.to_thread(operator.proc.wait, 30)
    finally:
        operator.stop()
    assert code != 0
    assert "--namespace='team-*': the operator serves namespaces by their exact names" in (
        operator.log()
    )
    namespaces = kmock.resource("v1/namespaces")
    assert not [r for r in kmock if r.resource == namespaces]
