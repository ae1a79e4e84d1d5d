"""spec.autoscaling: the CRD's rules, the parsed target, and the ScaledObject and HPA built from
it, checked against KEDA's own ScaledObject schema (tests/operator/keda-scaledobject-v1alpha1
.schema.json, from kedacore/keda) and Kubernetes' HPA schema (kubernetes-validate)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from vllm_operator.model.autoscaling import (
    build_hpa,
    build_interceptor_route,
    build_scaled_object,
    quantity,
    query,
    threshold,
    window,
)
from vllm_operator.model.builders import build_all
from vllm_operator.model.drift import drifted
from vllm_operator.model.schema import openapi_schema
from vllm_operator.model.spec import DURATION_PATTERN, InvalidSpec, parse_deployment
from vllm_testkit.admission import admit
from vllm_testkit.samples import IMAGES, vllmd

HERE = Path(__file__).parent
ROUTE_SCHEMA = json.loads((HERE / "keda-http-interceptorroute-v1beta1.schema.json").read_text())
KEDA_SCHEMA = json.loads(
    (Path(__file__).parent / "keda-scaledobject-v1alpha1.schema.json").read_text()
)
MODEL = {"uri": "hf://org/model"}
PROMETHEUS = {"address": "http://prometheus.monitoring.svc:9090"}
SELECTOR = '{namespace="models",serving_vllm_ai_deployment="m"}'


def body(autoscaling: dict[str, Any]) -> dict[str, Any]:
    return vllmd("m", {"model": MODEL, "autoscaling": autoscaling})


def spec(autoscaling: dict[str, Any]):
    return parse_deployment(body(autoscaling), IMAGES)


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of `obj` the schema does not declare (KEDA's schema does not refuse them; the API
    server would drop them silently, so a typo would go unnoticed)."""
    if isinstance(obj, dict) and "properties" in schema:
        found = []
        for key, value in obj.items():
            if key not in schema["properties"]:
                if not schema.get("additionalProperties"):
                    found.append(f"{path}.{key}")
                continue
            found += unknown_fields(value, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [
            f for i, v in enumerate(obj) for f in unknown_fields(v, schema["items"], f"{path}[{i}]")
        ]
    return []


@pytest.mark.parametrize(
    ("autoscaling", "message"),
    [
        ({"maxReplicas": 3}, "set exactly one target"),
        ({"maxReplicas": 3, "ttftSeconds": 1, "kvCacheUsage": 0.5}, "set exactly one target"),
        ({"minReplicas": 4, "maxReplicas": 3, "ttftSeconds": 1}, "minReplicas cannot exceed"),
        ({"maxReplicas": 3, "kvCacheUsage": 1.5}, "kvCacheUsage"),
        ({"maxReplicas": 3, "ttftSeconds": 0}, "ttftSeconds"),
        (
            {"maxReplicas": 3, "ttftSeconds": 1, "prometheus": {"address": "prometheus:9090"}},
            "address",
        ),
    ],
)
def test_the_crd_refuses_what_cannot_scale(autoscaling, message):
    errors = admit("VLLMDeployment", body(autoscaling))
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize(
    ("autoscaling", "message"),
    [
        ({"maxReplicas": 3}, "set exactly one target"),
        ({"minReplicas": 4, "maxReplicas": 3, "ttftSeconds": 1}, "cannot exceed maxReplicas"),
    ],
)
def test_the_operator_refuses_it_too(autoscaling, message):
    with pytest.raises(InvalidSpec, match=message):
        spec(autoscaling)


def test_defaults_and_each_target_s_signal():
    parsed = spec({"maxReplicas": 5, "ttftSeconds": 0.5, "prometheus": PROMETHEUS}).autoscaling
    assert (parsed.min_replicas, parsed.max_replicas, parsed.target, parsed.value) == (
        1, 5, "ttftSeconds", 0.5,
    )  # fmt: skip
    assert parsed.scale_down_stabilization_seconds == 300
    waited = f"sum(max by (pod, engine) (rate(vllm:waiting_token_seconds_total{SELECTOR}[60s])))"
    prefill = (
        "(sum(max by (pod, engine) "
        f"(rate(vllm:prefill_token_seconds_total{SELECTOR}[60s]))) or vector(0))"
    )
    prefilled = f"max by (pod, engine) (rate(vllm:prefilled_tokens_total{SELECTOR}[60s]))"
    ready = f"({prefilled} and on (pod) (max by (pod) (vllm:server_ready{SELECTOR}) == 1))"
    assert query(spec({"maxReplicas": 5, "ttftSeconds": 0.5})) == (
        f"({waited} / clamp_min(avg({ready}), 1))"
        f" / clamp_min({prefill} / clamp_min(sum({ready}), 1) / 0.5 + 0.25, 1)"
    )
    signals = {
        "tokensWaitingPerReplica": "vllm:num_tokens_waiting",
        "kvCacheUsage": "vllm:kv_cache_usage_perc",
        "requestsWaitingPerReplica": "vllm:num_requests_waiting",
    }
    for target, metric in signals.items():
        expected = f"sum(max by (pod, engine) ({metric}{SELECTOR}))"
        assert query(spec({"maxReplicas": 5, target: 1})) == expected


@pytest.mark.parametrize(
    ("interval", "expected"),
    [("15s", "60s"), ("30s", "120s"), ("1m", "240s"), ("1m30s", "360s"), ("500ms", "60s")],
)
def test_the_rate_window_holds_four_scrapes_and_at_least_a_minute(interval: str, expected: str):
    parsed = parse_deployment(
        vllmd("m", {"model": MODEL, "monitoring": {"interval": interval},
                    "autoscaling": {"maxReplicas": 5, "ttftSeconds": 1}}),
        IMAGES,
    )  # fmt: skip
    assert window(parsed) == expected
    assert f"[{expected}]" in query(parsed)


def test_an_hpa_target_the_api_server_canonicalized_is_no_drift():
    """The API server stores averageValue "4000" as "4k": compared by value, or the operator
    would apply the HPA at every drift check."""
    hpa = build_hpa(spec({"maxReplicas": 8, "tokensWaitingPerReplica": 4000}))
    stored = copy.deepcopy(hpa)
    stored["spec"]["metrics"][0]["external"]["target"]["averageValue"] = "4k"
    assert not drifted(hpa["spec"], stored["spec"])
    stored["spec"]["metrics"][0]["external"]["target"]["averageValue"] = "5k"
    assert drifted(hpa["spec"], stored["spec"])


def test_thresholds_are_what_keda_and_hpa_parse():
    """KEDA parses threshold with Go's JSON number syntax (no ".5" or "5."); HPA takes a
    quantity."""
    for value, text, amount in [
        (0.5, "0.5", "500m"),
        (4000, "4000", "4000"),
        (0.85, "0.85", "850m"),
    ]:
        key = "kvCacheUsage" if value < 1 else "tokensWaitingPerReplica"
        parsed = spec({"maxReplicas": 5, key: value})
        assert threshold(parsed) == text and json.loads(text) == value
        assert quantity(float(value)) == amount


@pytest.mark.parametrize(
    "target",
    ["ttftSeconds", "tokensWaitingPerReplica", "kvCacheUsage", "requestsWaitingPerReplica"],
)
def test_the_scaled_object_is_valid_for_keda(target: str):
    value = 0.5 if target in ("ttftSeconds", "kvCacheUsage") else 10
    scaled = build_scaled_object(
        spec({"minReplicas": 0, "maxReplicas": 8, target: value, "prometheus": PROMETHEUS})
    )
    jsonschema.validate(scaled, KEDA_SCHEMA)
    assert unknown_fields(scaled, KEDA_SCHEMA) == []
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert {"serverAddress", "query", "threshold"} <= set(trigger["metadata"])
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA's CRD says so
    # Nothing holds requests at zero here (no HTTP add-on): one replica stays.
    assert scaled["spec"]["minReplicaCount"] == 1
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {"scaleDown": {"stabilizationWindowSeconds": 300}}


def test_keda_needs_a_prometheus_address():
    with pytest.raises(ValueError, match=r"prometheus\.address"):
        build_scaled_object(spec({"maxReplicas": 8, "ttftSeconds": 1}))


@pytest.mark.parametrize(
    "target",
    ["ttftSeconds", "tokensWaitingPerReplica", "kvCacheUsage", "requestsWaitingPerReplica"],
)
def test_the_hpa_is_valid_and_keeps_a_replica(target: str):
    value = 0.5 if target in ("ttftSeconds", "kvCacheUsage") else 10
    hpa = build_hpa(
        spec(
            {"minReplicas": 0, "maxReplicas": 8, target: value, "scaleDownStabilizationSeconds": 60}
        )
    )
    kubernetes_validate.validate(hpa, "1.34", strict=True)
    assert hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "VLLMDeployment"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 60


def test_to_zero_where_the_http_add_on_holds_requests():
    """minReplicas 0 with KEDA's HTTP add-on: the InterceptorRoute holds requests for the model's
    hosts while the first replica starts, and its held requests wake the model (external-push,
    the add-on's own pattern) beside the Prometheus trigger."""
    parsed = spec({
        "minReplicas": 0, "maxReplicas": 4, "ttftSeconds": 1, "prometheus": PROMETHEUS,
        "scaleFromZero": {"coldStartTimeout": "20m"},
    })  # fmt: skip
    scaled = build_scaled_object(parsed, requests_held=True)
    jsonschema.validate(scaled, KEDA_SCHEMA)
    assert unknown_fields(scaled, KEDA_SCHEMA) == []
    assert scaled["spec"]["minReplicaCount"] == 0
    prometheus, held = scaled["spec"]["triggers"]
    assert prometheus["type"] == "prometheus"
    assert held == {
        "type": "external-push",
        "name": "held-requests",
        "metadata": {
            "scalerAddress": "keda-add-ons-http-external-scaler.keda:9090",
            "interceptorRoute": "m",
        },
    }
    route = build_interceptor_route(parsed)
    jsonschema.validate(route, ROUTE_SCHEMA)
    assert unknown_fields(route, ROUTE_SCHEMA) == []
    target = route["spec"]["target"]
    assert ("port" in target) != ("portName" in target)  # the CRD's CEL rule
    assert target == {"service": "m", "port": 8000}  # the model's Service, its API port
    assert route["spec"]["rules"] == [{"hosts": ["m.models"]}]
    assert route["spec"]["timeouts"] == {"readiness": "20m", "responseHeader": "0s"}
    assert route["spec"]["scalingMetric"] == {"concurrency": {"targetValue": 1000}}
    (owner,) = route["metadata"]["ownerReferences"]
    assert owner["kind"] == "VLLMDeployment" and owner["controller"]


def test_scale_from_zero_hosts_are_checked_by_the_crd():
    base = {"minReplicas": 0, "maxReplicas": 4, "ttftSeconds": 1}
    assert (
        admit(
            "VLLMDeployment",
            body({**base, "scaleFromZero": {"hosts": ["llm.example.com", "*.corp"]}}),
        )
        == []
    )
    errors = admit("VLLMDeployment", body({**base, "scaleFromZero": {"hosts": ["Bad Host"]}}))
    assert errors and "hosts" in errors[0]


def test_the_pdb_stays_while_the_autoscaler_moves_the_replicas():
    """Not created and deleted each time the autoscaler crosses 1 and 2 replicas."""
    for replicas in (1, 2, 5):
        body = vllmd("m", {"model": MODEL, "replicas": replicas,
                           "autoscaling": {"maxReplicas": 8, "ttftSeconds": 1}})  # fmt: skip
        objects = build_all(parse_deployment(body, IMAGES), monitoring_available=False,
                            operator_namespace="vllm-system")  # fmt: skip
        assert [o["kind"] for o in objects].count("PodDisruptionBudget") == 1, replicas
    fixed = vllmd("m", {"model": MODEL, "replicas": 1})
    objects = build_all(parse_deployment(fixed, IMAGES), monitoring_available=False,
                        operator_namespace="vllm-system")  # fmt: skip
    assert "PodDisruptionBudget" not in [o["kind"] for o in objects]  # as before


def test_the_crd_s_durations_are_the_operator_s():
    """scaleFromZero.coldStartTimeout and startupTimeout take what duration_seconds reads."""
    spec_schema = openapi_schema("VLLMDeployment")["properties"]["spec"]["properties"]
    zero = spec_schema["autoscaling"]["properties"]["scaleFromZero"]["properties"]
    assert zero["coldStartTimeout"]["pattern"] == DURATION_PATTERN
    assert spec_schema["startupTimeout"]["pattern"] == DURATION_PATTERN
