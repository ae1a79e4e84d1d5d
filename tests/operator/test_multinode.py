"""spec.parallelism: a replica larger than one node becomes a group of pods on a LeaderWorkerSet
(kubernetes-sigs/lws, leaderworkerset.x-k8s.io/v1) running vLLM's multi-node mode without Ray.

The CRD's rules and the operator agree on what can work (tensor x pipeline within one pod's
GPUs on one node, equal to all the group's GPUs across nodes); the generated LeaderWorkerSet is
valid against LWS v1's own schema (tests/operator/lws-leaderworkerset-v1.schema.json, from
kubernetes-sigs/lws v0.10.0) with no field it does not define; its pods carry vLLM's flags
wired from LWS's variables, the probes, and the restricted Pod Security profile; the Service,
the PDB, the monitors and the NetworkPolicy treat leaders and workers as they must."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from vllm_operator.model.builders import (
    LWS_API_VERSION,
    MASTER_PORT,
    build_all,
    selector_labels,
    worker_labels,
)
from vllm_operator.model.spec import InvalidSpec, Parallelism, parse_deployment
from vllm_testkit.admission import admit
from vllm_testkit.pod_security import violations
from vllm_testkit.samples import IMAGES, vllmd

from .test_autoscaling import unknown_fields

LWS_SCHEMA = json.loads((Path(__file__).parent / "lws-leaderworkerset-v1.schema.json").read_text())
MODEL = {"uri": "hf://org/model"}
TWO_NODES = {"gpusPerReplica": 8, "parallelism": {"tensor": 8, "pipeline": 2, "nodes": 2}}


def body(fields: dict[str, Any], name: str = "big") -> dict[str, Any]:
    return vllmd(name, {"model": MODEL, **fields})


def objects(fields: dict[str, Any], **kwargs: Any) -> dict[str, dict[str, Any]]:
    spec = parse_deployment(body(fields), IMAGES)
    built = build_all(spec, monitoring_available=True, operator_namespace="vllm-system", **kwargs)
    return {o["kind"]: o for o in built}


def refused(fields: dict[str, Any], message: str, name: str = "big") -> None:
    obj = body(fields, name)
    errors = admit("VLLMDeployment", obj)
    assert any(message in e for e in errors), errors
    with pytest.raises(InvalidSpec):
        parse_deployment(obj, IMAGES)


def accepted(fields: dict[str, Any], name: str = "big") -> Parallelism:
    obj = body(fields, name)
    assert admit("VLLMDeployment", obj) == []
    return parse_deployment(obj, IMAGES).parallelism


# --- what the API server and the operator admit ---------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, Parallelism(1, 1, 1)),
        ({"gpusPerReplica": 4, "parallelism": {"tensor": 4}}, Parallelism(4, 1, 1)),
        ({"gpusPerReplica": 4, "parallelism": {"tensor": 2, "pipeline": 2}}, Parallelism(2, 2, 1)),
        ({"gpusPerReplica": 4, "engine": {"tensorParallelSize": 2}}, Parallelism(2, 1, 1)),
        (TWO_NODES, Parallelism(8, 2, 2)),
        ({"gpusPerReplica": 8, "parallelism": {"tensor": 16, "nodes": 2}}, Parallelism(16, 1, 2)),
        (
            {
                "gpusPerReplica": 4,
                "engine": {"tensorParallelSize": 4},
                "parallelism": {"pipeline": 4, "nodes": 4},
            },
            Parallelism(4, 4, 4),
        ),
        ({"accelerator": "CPU", "parallelism": {"tensor": 2, "nodes": 2}}, Parallelism(2, 1, 2)),
    ],
)
def test_splits_that_fit_the_gpus_are_admitted(fields: dict[str, Any], expected: Parallelism):
    assert accepted(fields) == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {
                "gpusPerReplica": 4,
                "engine": {"tensorParallelSize": 4},
                "parallelism": {"tensor": 4},
            },
            "set parallelism.tensor or engine.tensorParallelSize, not both",
        ),
        (
            {"gpusPerReplica": 4, "parallelism": {"tensor": 4, "pipeline": 2}},
            "on one node, parallelism.tensor x parallelism.pipeline cannot exceed gpusPerReplica",
        ),
        (
            {"gpusPerReplica": 8, "parallelism": {"tensor": 8, "nodes": 2}},
            "must equal parallelism.nodes x gpusPerReplica",
        ),
        (
            {"gpusPerReplica": 8, "parallelism": {"tensor": 8, "pipeline": 4, "nodes": 2}},
            "must equal parallelism.nodes x gpusPerReplica",
        ),
        (
            {"accelerator": "CPU", "parallelism": {"tensor": 3, "nodes": 2}},
            "must equal parallelism.nodes x gpusPerReplica (on CPU, a multiple of nodes)",
        ),
        ({"parallelism": {"nodes": 0}}, "parallelism.nodes"),
        ({"parallelism": {"nodes": 65}}, "parallelism.nodes"),
        ({"engine": {"extraArgs": ["--nnodes", "2"]}}, "engine.extraArgs"),
        ({"engine": {"extraArgs": ["-pp=2"]}}, "engine.extraArgs"),
        ({"engine": {"extraArgs": ["--headless"]}}, "engine.extraArgs"),
        ({"engine": {"extraArgs": ["--master-addr=10.0.0.1"]}}, "engine.extraArgs"),
        # argparse reads a one-letter short flag's value attached: --nnodes 1, --node-rank 3
        ({"engine": {"extraArgs": ["-n1"]}}, "engine.extraArgs"),
        ({"engine": {"extraArgs": ["-r3"]}}, "engine.extraArgs"),
        # a group's pods on several nodes cannot share a ReadWriteOnce volume
        (
            {**TWO_NODES, "modelCache": {"enabled": True}},
            "modelCache.accessMode must be ReadWriteMany",
        ),
        # the leader's rendezvous port
        ({**TWO_NODES, "port": 29500}, "cannot be 29500"),
        ({**TWO_NODES, "adminPort": 29500}, "cannot be 29500"),
        ({**TWO_NODES, "orca": {"grpcPort": 29500}}, "cannot be 29500"),
    ],
)
def test_splits_that_cannot_work_are_refused_by_both(fields: dict[str, Any], message: str):
    refused(fields, message)


def test_a_multi_node_name_leaves_room_for_the_stateful_sets():
    """LWS names a group's workers' StatefulSet NAME-GROUP, groups up to 1999 (1000 replicas and
    as many surging), and labels its pods NAME-GROUP-<10 characters>: at most 63."""
    long = "m" * 48
    refused(TWO_NODES, "metadata.name must be at most 47 characters", name=long)
    accepted(TWO_NODES, name=long[:47])
    assert len(f"{long[:47]}-1999-{'h' * 10}") == 63
    accepted({"gpusPerReplica": 8}, name=long)  # one node: a Deployment, 63 as ever
    accepted({**TWO_NODES, "modelCache": {"enabled": True, "accessMode": "ReadWriteMany"}})
    accepted({"modelCache": {"enabled": True}, "engine": {"extraArgs": ["-O3"]}})


# --- the LeaderWorkerSet ---------------------------------------------------------------------------


def test_more_than_one_node_is_a_leader_worker_set_valid_against_lws_v1():
    built = objects(TWO_NODES)
    assert "Deployment" not in built
    lws = built["LeaderWorkerSet"]
    assert lws["apiVersion"] == LWS_API_VERSION
    jsonschema.validate(lws, LWS_SCHEMA)
    assert unknown_fields(lws, LWS_SCHEMA) == []
    spec = lws["spec"]
    assert spec["replicas"] == 1  # groups: the scale subresource counts them
    assert spec["leaderWorkerTemplate"]["size"] == 2
    # One pod restarting recreates its group: vLLM's group cannot take a member back.
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    # vLLM's leader is ready only once its workers joined: LeaderReady would never start them.
    assert spec["startupPolicy"] == "LeaderCreated"
    # A shared headless Service would be named like the model's Service and take its place.
    assert spec["networkConfig"] == {"subdomainPolicy": "UniquePerReplica"}
    # GPU rollouts need no spare GPUs: a group at a time, none surging.
    assert spec["rolloutStrategy"]["rollingUpdateConfiguration"] == {
        "maxSurge": 0, "maxUnavailable": 1,
    }  # fmt: skip


def test_one_node_stays_a_deployment():
    built = objects({"gpusPerReplica": 4, "parallelism": {"tensor": 4}})
    assert "LeaderWorkerSet" not in built
    (server,) = built["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert server["args"][server["args"].index("--tensor-parallel-size") + 1] == "4"
    assert "--nnodes" not in server["args"]


def flags(args: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else None
            out[arg] = value
    return out


def test_every_pod_of_a_group_gets_vllms_multi_node_flags_from_lws_variables():
    templates = objects(TWO_NODES)["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    leader = templates["leaderTemplate"]["spec"]["containers"][0]
    worker = templates["workerTemplate"]["spec"]["containers"][0]
    shared = {
        "--tensor-parallel-size": "8",
        "--pipeline-parallel-size": "2",
        "--distributed-executor-backend": "mp",
        "--nnodes": "2",
        # LeaderWorkerSet's webhook sets these variables in every container; the kubelet
        # expands $(VAR) in args.
        "--node-rank": "$(LWS_WORKER_INDEX)",
        "--master-addr": "$(LWS_LEADER_ADDRESS)",
        "--master-port": str(MASTER_PORT),
    }
    for container in (leader, worker):
        assert flags(container["args"]).items() >= shared.items()
        assert container["command"] == ["vllm-ext-serve"]
        assert {
            "name": "VLLM_HOST_IP",
            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
        } in (container["env"])
        # Liveness from the first second and phases in /ready, in both roles.
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "--headless" in worker["args"] and "--headless" not in leader["args"]
    # Only the leader serves the API, the admin port and ORCA.
    assert [p["name"] for p in leader["ports"]] == ["http", "admin"]
    assert [p["name"] for p in worker["ports"]] == ["http"]
    # Both hold part of the model: the same GPUs, image and volumes.
    assert leader["resources"] == worker["resources"]
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert leader["image"] == worker["image"]
    assert leader["volumeMounts"] == worker["volumeMounts"]


def test_both_roles_pass_the_restricted_pod_security_profile():
    templates = objects(TWO_NODES)["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        pod = {
            "kind": "Pod",
            "metadata": templates[role]["metadata"],
            "spec": templates[role]["spec"],
        }
        assert violations(pod) == [], role


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_the_service_and_the_monitors_select_the_leaders_the_policies_every_pod():
    built = objects({**TWO_NODES, "lora": {"enabled": True}, "monitoring": {"podMonitor": True}})
    templates = built["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    leader = templates["leaderTemplate"]["metadata"]["labels"]
    worker = templates["workerTemplate"]["metadata"]["labels"]
    assert worker == worker_labels(parse_deployment(body(TWO_NODES), IMAGES))
    for selector in (
        built["Service"]["spec"]["selector"],
        built["PodMonitor"]["spec"]["selector"]["matchLabels"],
    ):
        assert matches(selector, leader) and not matches(selector, worker)
    # The adapters' readiness gate is the leader's: it loads them for the whole group.
    assert templates["leaderTemplate"]["spec"]["readinessGates"]
    assert "readinessGates" not in templates["workerTemplate"]["spec"]
    policy = built["NetworkPolicy"]["spec"]
    assert matches(policy["podSelector"]["matchLabels"], leader)
    assert matches(policy["podSelector"]["matchLabels"], worker)
    # The group's own traffic (the rendezvous, gloo/NCCL, vLLM's queues): every TCP port but
    # the served ones (their own rules stand: a pod labelled like ours gets no way round
    # networkPolicy.from), from this deployment's pods only.
    (group,) = [rule for rule in policy["ingress"] if len(rule["ports"]) > 1]
    assert group["ports"] == [
        {"protocol": "TCP", "port": 1, "endPort": 7999},
        {"protocol": "TCP", "port": 8002, "endPort": 65535},
    ]
    (peer,) = group["from"]
    assert matches(peer["podSelector"]["matchLabels"], worker)
    assert matches(peer["podSelector"]["matchLabels"], leader)
    assert peer["podSelector"]["matchLabels"] != {}


def test_the_pdb_counts_every_pod_of_the_groups():
    built = objects({**TWO_NODES, "replicas": 3})
    templates = built["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    selector = built["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    for role in ("leaderTemplate", "workerTemplate"):
        assert matches(selector, templates[role]["metadata"]["labels"])
    assert built["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    single = objects({"gpusPerReplica": 8, "replicas": 3})
    assert single["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector_labels(
        "big"
    )


@pytest.mark.parametrize(
    ("replicas", "rollout", "expected"),
    [
        # LWS's webhook refuses both coming to 0 groups (25 % of 3 rounds down to 0).
        (3, {"maxSurge": 0, "maxUnavailable": "25%"}, {"maxSurge": 0, "maxUnavailable": 1}),
        (4, {"maxSurge": 0, "maxUnavailable": "25%"}, {"maxSurge": 0, "maxUnavailable": "25%"}),
        (3, {"maxSurge": "10%", "maxUnavailable": 0}, {"maxSurge": "10%", "maxUnavailable": 0}),
        (2, {}, {"maxSurge": 0, "maxUnavailable": 1}),
    ],
)
def test_the_rollout_in_groups_is_one_lws_admits(replicas, rollout, expected):
    fields = {**TWO_NODES, "replicas": replicas, "rollout": rollout}
    lws = objects(fields)["LeaderWorkerSet"]
    assert lws["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"] == expected


def test_groups_spread_with_all_their_pods():
    spread = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
               "whenUnsatisfiable": "ScheduleAnyway"}]  # fmt: skip
    templates = objects({**TWO_NODES, "topologySpreadConstraints": spread})["LeaderWorkerSet"][
        "spec"
    ]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        (constraint,) = templates[role]["spec"]["topologySpreadConstraints"]
        selector = constraint["labelSelector"]["matchLabels"]
        for other in ("leaderTemplate", "workerTemplate"):
            assert matches(selector, templates[other]["metadata"]["labels"])


def test_the_group_rule_leaves_out_every_served_port():
    fields = {**TWO_NODES, "port": 1024, "adminPort": 65535, "orca": {"grpcPort": 9000}}
    policy = objects(fields)["NetworkPolicy"]["spec"]
    (group,) = [rule for rule in policy["ingress"] if len(rule["ports"]) > 1]
    assert group["ports"] == [
        {"protocol": "TCP", "port": 1, "endPort": 1023},
        {"protocol": "TCP", "port": 1025, "endPort": 8999},
        {"protocol": "TCP", "port": 9001, "endPort": 65534},
    ]
