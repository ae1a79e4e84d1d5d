"""The Helm chart, rendered and linted by real Helm (helm-python-sdk bundles Helm's Go SDK), for
a matrix of values, like the Apache Airflow chart's tests: valid Kubernetes objects, the values
schema, labels, security, the helm test hook, and RBAC that covers what the operator does."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_python import Chart

from vllm_operator.model.schema import with_defaults
from vllm_testkit.admission import admit
from vllm_testkit.chart import render as render_chart
from vllm_testkit.pod_security import violations

CHART = Path(__file__).parents[2] / "charts" / "vllm"
RELEASE, NAMESPACE = "vllm", "vllm-system"
KUBERNETES_VERSION = "1.34"
API_CALLS = Path(__file__).parents[1] / "golden" / "operator-api-calls.json"

CPU_MODEL = {
    "name": "tiny",
    "spec": {
        "model": {"uri": "/models/tiny-llama", "servedName": "tiny-llama"},
        "accelerator": "CPU",
        "engine": {"dtype": "float32", "maxModelLen": 512},
        "lora": {"enabled": True, "allowedSourceRoots": ["/models"]},
    },
}
GPU_MODEL = {
    "name": "llama",
    "labels": {"team": "ml"},
    "spec": {
        "model": {"uri": "hf://meta-llama/Llama-3.2-1B-Instruct"},
        "replicas": 2,
        "gpusPerReplica": 1,
        "apiKeySecret": {"name": "llama-api"},
        "hfTokenSecret": {"name": "hf"},
        "orca": {"formats": ["TEXT"]},
    },
}
GATEWAY = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
PROMETHEUS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "gpu model with existing secrets": {"deployments": [GPU_MODEL]},
    "cpu model with adapters": {
        "deployments": [CPU_MODEL],
        "adapters": [
            {
                "name": "sql",
                "spec": {"deploymentRef": {"name": "tiny"}, "source": {"uri": "/models/sql"}},
            },
            {
                "name": "chat",
                "spec": {
                    "deploymentRef": {"name": "tiny"},
                    "source": {"uri": "/models/chat"},
                    "replicas": 1,
                },
            },
        ],
    },
    "monitoring on": {
        "deployments": [
            CPU_MODEL,
            GPU_MODEL | {"spec": GPU_MODEL["spec"] | {"monitoring": {"podMonitor": True}}},
        ],
        "monitoring": {
            "serviceMonitor": True,
            "interval": "15s",
            "labels": {"release": "prometheus"},
        },
    },
    "network policy on": {
        "deployments": [CPU_MODEL],
        "networkPolicy": {
            "enabled": True,
            "from": [GATEWAY],
            "metricsFrom": [PROMETHEUS],
        },
    },
    "operator high availability": {"operator": {"replicas": 3}},
    "operator serving namespaces": {
        "operator": {"watchNamespaces": ["team-a", NAMESPACE], "replicas": 2},
        "deployments": [CPU_MODEL],
    },
    "operator serving one namespace": {"operator": {"watchNamespaces": ["team-a"]}},
    "operator options": {
        "operator": {
            "image": {"repository": "registry.example/vllm-operator", "tag": "1.2.3"},
            "imagePullSecrets": ["registry"],
            "extraArgs": ["--verbose"],
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "system", "operator": "Exists"}],
            "priorityClassName": "system-cluster-critical",
            "podAnnotations": {"example.org/a": "b"},
        },
        "serviceAccount": {"create": False, "name": "existing"},
        "tests": {"enabled": False},
    },
}


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return render_chart(values, chart=CHART, name=RELEASE, namespace=NAMESPACE)


def notes(values: dict[str, Any] | None = None) -> str:
    files = Chart.load(CHART).render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return files[f"{Path(CHART).name}/templates/NOTES.txt"]


KOPF_CRDS = {
    crd["spec"]["names"]["kind"]: crd
    for crd in (
        yaml.safe_load(p.read_text()) for p in (CHART / "charts/kopf-peering/crds").glob("*")
    )
}


def hook(obj: dict) -> str | None:
    """The Helm hook `obj` is part of (pre-delete, ...), None for the release's own objects."""
    return (obj["metadata"].get("annotations") or {}).get("helm.sh/hook")


def is_hook(obj: dict) -> bool:
    return hook(obj) is not None


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def own(objects: list[dict]) -> list[dict]:
    """The release's own objects: hooks (the CRD upgrade, the uninstall, the tests) are Helm's
    to run and remove."""
    return [o for o in objects if not is_hook(o)]


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_lint_strict_is_clean(case: str):
    result = helm_python.lint(CHART, MATRIX[case], strict=True, namespace=NAMESPACE)
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_every_object_is_valid(case: str):
    for obj in render(MATRIX[case]):
        if obj["apiVersion"].startswith("serving.vllm.ai/"):
            assert admit(obj["kind"], obj) == [], obj["metadata"]["name"]
        elif obj["apiVersion"].startswith("kopf.dev/"):  # the kopf-peering subchart's CRDs
            (version,) = KOPF_CRDS[obj["kind"]]["spec"]["versions"]
            jsonschema.validate(obj, version["schema"]["openAPIV3Schema"])
        elif obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's schema is not at hand: test_monitoring
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("case", [*sorted(MATRIX), "serving namespaces"])
def test_rendered_yaml_has_no_duplicate_keys(case: str):
    """PyYAML keeps the last of two equal keys without a word (so the other tests cannot see
    them); yamllint's key-duplicates rule reads the rendered text itself."""
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig("rules: {key-duplicates: enable}")
    values = SERVING_NAMESPACES if case == "serving namespaces" else MATRIX[case]
    files = Chart.load(CHART).render(values, name=RELEASE, namespace=NAMESPACE)
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        problems = [f"{path}:{p.line}: {p.message}" for p in linter.run(text, config)]
        assert problems == []


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_labels(case: str):
    """Helm's recommended labels on every object: CRs, hooks, test pods and the dashboard too
    (`app.kubernetes.io/name`: `vllm-operator` for the operator's, the chart's name else)."""
    for obj in render(MATRIX[case]):
        labels = obj["metadata"]["labels"]
        assert labels["helm.sh/chart"] == "vllm-0.1.0"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/name"] in ("vllm", "vllm-operator"), obj["metadata"]
        assert "app.kubernetes.io/version" in labels


def test_operator_deployment():
    (deployment,) = by_kind(render(), "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    # VLLMDeployments' NetworkPolicies let the operator's pods in by this label.
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "vllm-operator"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "ghcr.io/vllm-k8s/vllm-operator:0.1.0"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    env = {e["name"]: e for e in container["env"]}
    assert env["VLLM_SERVER_IMAGE_CPU"]["value"] == "ghcr.io/vllm-k8s/vllm-server:0.1.0-cpu"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


POD_KINDS = ("Pod", "Deployment", "Job")


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_every_pod_passes_the_restricted_pod_security_profile(case: str):
    """The operator, `helm test`'s pods and the uninstall hook run in namespaces that enforce
    Pod Security's "restricted" profile; with resources, and no API token where none is used."""
    pods = [o for o in render(MATRIX[case]) if o["kind"] in POD_KINDS]
    for obj in pods:
        assert violations(obj) == [], obj["metadata"]["name"]
        spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
        for container in spec["containers"]:
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
            assert "memory" in container["resources"]["limits"]
        # The operator and the uninstall hook call the API; the test pods do not.
        calls_the_api = obj["kind"] != "Pod"
        assert spec.get("automountServiceAccountToken", True) is calls_the_api
    with_tests = bool(MATRIX[case].get("deployments")) and MATRIX[case].get("tests") != {
        "enabled": False
    }
    assert {o["kind"] for o in pods} == {"Deployment", "Job"} | ({"Pod"} if with_tests else set())


def test_existing_service_account_is_used_not_created():
    objects = [o for o in render(MATRIX["operator options"]) if not is_hook(o)]
    assert by_kind(objects, "ServiceAccount") == []
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "existing"
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "existing", "namespace": NAMESPACE}
    ]


def test_models_and_adapters_from_values():
    objects = render(MATRIX["cpu model with adapters"])
    (model,) = by_kind(objects, "VLLMDeployment")
    assert model["metadata"] | {"labels": None} == {
        "name": "tiny",
        "namespace": NAMESPACE,
        "labels": None,
    }
    secure_default = {"networkPolicy": {"enabled": True, "from": [], "metricsFrom": []}}
    assert model["spec"] == CPU_MODEL["spec"] | secure_default
    assert sorted(a["metadata"]["name"] for a in by_kind(objects, "LoraAdapter")) == ["chat", "sql"]


def test_monitoring_covers_the_operator_and_fills_in_the_models():
    objects = render(MATRIX["monitoring on"])
    (monitor,) = by_kind(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == "vllm-metrics"]
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    (deployment,) = by_kind(objects, "Deployment")
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "metrics", "containerPort": 8081} in ports
    models = {
        m["metadata"]["name"]: m["spec"]["monitoring"] for m in by_kind(objects, "VLLMDeployment")
    }
    chart = {
        "serviceMonitor": True,
        "podMonitor": False,
        "interval": "15s",
        "labels": {"release": "prometheus"},
    }
    assert models == {"tiny": chart, "llama": chart | {"podMonitor": True}}  # the spec's own wins
    monitoring = MATRIX["monitoring on"]["monitoring"]
    own = {"labels": {"team": "ml", "release": "x"}}
    model = CPU_MODEL | {"spec": CPU_MODEL["spec"] | {"monitoring": own}}
    (rendered,) = by_kind(
        render({"deployments": [model], "monitoring": monitoring}), "VLLMDeployment"
    )
    assert rendered["spec"]["monitoring"]["labels"] == {"team": "ml", "release": "x"}  # its own win
    own["labels"] = {"team": "ml"}
    (rendered,) = by_kind(
        render({"deployments": [model], "monitoring": monitoring}), "VLLMDeployment"
    )
    assert rendered["spec"]["monitoring"]["labels"] == {"team": "ml", "release": "prometheus"}
    assert by_kind(render(), "ServiceMonitor") == []
    assert (
        "monitoring"
        not in by_kind(render(MATRIX["cpu model with adapters"]), "VLLMDeployment")[0]["spec"]
    )


def test_network_policies_for_the_operator_and_the_models():
    objects = render(MATRIX["network policy on"])
    (policy,) = by_kind(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "vllm-operator"
    assert policy["spec"]["ingress"] == [
        {"from": [PROMETHEUS], "ports": [{"protocol": "TCP", "port": 8081}]}
    ]
    (model,) = by_kind(objects, "VLLMDeployment")
    helm_test = {"app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/component": "test"}
    assert model["spec"]["networkPolicy"] == {
        "enabled": True,
        "from": [GATEWAY, {"podSelector": {"matchLabels": helm_test}}],  # `helm test` gets in
        "metricsFrom": [PROMETHEUS],
    }
    (test_pod,) = [o for o in by_kind(objects, "Pod") if is_hook(o)]
    assert helm_test.items() <= test_pod["metadata"]["labels"].items()
    off = render(
        {
            "deployments": [
                CPU_MODEL | {"spec": CPU_MODEL["spec"] | {"networkPolicy": {"enabled": False}}}
            ],
            "networkPolicy": {"enabled": True},
        }
    )
    assert by_kind(off, "VLLMDeployment")[0]["spec"]["networkPolicy"]["enabled"] is False
    # On by default: the models' admin port kept to the operator, their API open to all (no
    # `from`, so `helm test`'s pods need no peer of their own).
    (default,) = by_kind(render({"deployments": [CPU_MODEL]}), "VLLMDeployment")
    assert default["spec"]["networkPolicy"] == {"enabled": True, "from": [], "metricsFrom": []}
    # Off in the values: no policy for the operator, and the listed models opt out too (the
    # CRD's own default is on).
    off = render({"deployments": [CPU_MODEL], "networkPolicy": {"enabled": False}})
    assert by_kind(off, "NetworkPolicy") == []
    assert by_kind(off, "VLLMDeployment")[0]["spec"]["networkPolicy"] == {"enabled": False}
    # Without metricsFrom, the operator's metrics port is open (Prometheus wherever it runs).
    (operator_policy,) = by_kind(render(), "NetworkPolicy")
    assert operator_policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8081}]}]


def urls_called(script: str) -> list[str]:
    """Every URL in a `sh -ec` script, its variables expanded from the script's own assignments
    as sh would (nothing from the test's expectations)."""
    variables: dict[str, str] = {}

    def expand(word: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], m[0]), word)

    urls = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if len(words) == 1 and re.fullmatch(r"\w+=\S*", words[0]):
            name, value = words[0].split("=", 1)
            variables[name] = expand(value)
        else:
            urls += [expand(w) for w in words if "://" in expand(w)]
    return urls


@pytest.mark.parametrize(
    "ports",
    [{}, {"port": 9000, "adminPort": 9001}, {"port": 8001, "adminPort": 8000}],
    ids=["defaults", "other ports", "swapped defaults"],
)
def test_helm_test_hook_checks_ready_and_a_completion_on_the_api_port(ports: dict[str, int]):
    model = GPU_MODEL | {"spec": GPU_MODEL["spec"] | ports}
    objects = render({"deployments": [model]})
    (pod,) = [o for o in by_kind(objects, "Pod") if "helm.sh/hook" in o["metadata"]["annotations"]]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["command"] == ["sh", "-ec"]
    script = pod["spec"]["containers"][0]["args"][0]
    # The ports the server gets: the rendered VLLMDeployment as the API server defaults it.
    (deployment,) = by_kind(objects, "VLLMDeployment")
    spec = with_defaults("VLLMDeployment", deployment)["spec"]
    api, admin = spec["port"], spec["adminPort"]
    assert (api, admin) == (ports.get("port", 8000), ports.get("adminPort", 8001))
    urls = [urlsplit(url) for url in urls_called(script)]
    assert [u.path for u in urls] == ["/ready", "/v1/completions"]
    for url in urls:
        assert (url.scheme, url.hostname) == ("http", "llama.vllm-system.svc")  # the Service
        assert url.port == api, url.geturl()
        assert url.port != admin  # the LoRA admin port is the operator's alone
    assert f":{admin}" not in script
    assert '"model": "meta-llama/Llama-3.2-1B-Instruct"' in script
    # The API key: a file of the Secret's volume (not an environment variable), sent as a bearer.
    assert "env" not in pod["spec"]["containers"][0]
    (volume,) = pod["spec"]["volumes"]
    assert volume["secret"] == {
        "secretName": "llama-api",
        "items": [{"key": "api-key", "path": "api-key"}],
    }
    (mount,) = pod["spec"]["containers"][0]["volumeMounts"]
    assert (mount["name"], mount["readOnly"]) == (volume["name"], True)
    assert "key=/etc/vllm-test/api-key" in script and mount["mountPath"] == "/etc/vllm-test"
    assert '"Authorization: Bearer $(cat "$key")"' in script
    assert by_kind(render(MATRIX["operator options"]), "Pod") == []


def test_uninstall_hook_deletes_the_releases_adapters_before_the_operator_goes():
    hooks = [o for o in render() if hook(o) == "pre-delete"]
    assert {o["kind"] for o in hooks} == {"ServiceAccount", "Role", "RoleBinding", "Job"}
    (job,) = [o for o in hooks if o["kind"] == "Job"]
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["kubectl", "delete", "loraadapters.serving.vllm.ai"]
    assert "--selector=app.kubernetes.io/instance=vllm" in command
    (role,) = [o for o in hooks if o["kind"] == "Role"]
    assert role["rules"] == [
        {"apiGroups": ["serving.vllm.ai"], "resources": ["loraadapters"],
         "verbs": ["list", "delete", "get", "watch"]}
    ]  # fmt: skip
    assert not [o for o in render({"uninstallHook": {"enabled": False}}) if hook(o) == "pre-delete"]


def test_dashboard_shows_the_servers_metrics():
    assert by_kind(own(render()), "ConfigMap") == []
    (config_map,) = by_kind(own(render({"dashboard": {"enabled": True}})), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["vllm.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in ("vllm:server_ready", "vllm:num_tokens_running", "vllm:num_tokens_waiting",
                   "vllm:kv_cache_usage_perc", "vllm:startup_phase_duration_seconds",
                   "vllm:prefill_tokens_per_second", "vllm:waiting_token_seconds_total",
                   "vllm:prefilled_tokens_total", "vllm:prefill_token_seconds_total",
                   "vllm_operator_reconciles_total", "vllm_operator_lora_calls_total"):  # fmt: skip
        assert metric in exprs


def test_notes_tell_the_next_step():
    assert "kubectl apply" in notes()
    with_model = notes(MATRIX["gpu model with existing secrets"])
    assert "kubectl -n vllm-system get vllmd -w" in with_model
    assert "http://llama.vllm-system.svc:8000/v1" in with_model
    assert "helm test vllm -n vllm-system" in with_model
    assert "API any client (list your gateway in networkPolicy.from" in notes()
    gateway = notes({"networkPolicy": {"from": [GATEWAY]}})
    assert "API the peers in networkPolicy.from" in gateway
    assert "NetworkPolicies are on" not in notes({"networkPolicy": {"enabled": False}})


def test_crds_come_from_the_one_copy():
    """Helm installs crds/ as is: the files the operator and its tests read (and, from the
    kopf-peering subchart, Kopf's)."""
    shipped = {c["name"]: c["data"] for c in Chart.load(CHART).crds}
    files = [*(CHART / "crds").glob("*.yaml"), *(CHART / "charts/kopf-peering/crds").glob("*")]
    assert {Path(n).name: d for n, d in shipped.items()} == {p.name: p.read_text() for p in files}
    assert {Path(n).name for n in shipped} == {
        "vllmdeployments.serving.vllm.ai.yaml",
        "loraadapters.serving.vllm.ai.yaml",
        "clusterkopfpeerings.kopf.dev.yaml",
        "kopfpeerings.kopf.dev.yaml",
    }


# --- values.schema.json -----------------------------------------------------------------------


def _paths(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _paths(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def _schema_has(schema: dict[str, Any], path: str) -> bool:
    node = schema
    for part in path.split("."):
        properties = node.get("properties") or {}
        if part in properties:
            node = properties[part]
            continue
        # A map of user keys (labels, resources, ...) or a free-form object (affinity).
        return isinstance(node.get("additionalProperties"), dict) or (
            node.get("type") == "object" and "properties" not in node
        )
    return True


def test_every_value_is_in_the_schema():
    """(That each is documented: test_chart_metadata.py, which generates the chart's README.)"""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing = [p for p in _paths(values) if not _schema_has(schema, p)]
    assert missing == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bogus": 1}, "additional properties 'bogus' not allowed"),
        ({"operator": {"replicas": 6}}, "maximum: got 6, want 5"),
        ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "value must be one of"),
        (
            {"deployments": [{"name": "Bad_Name", "spec": {"model": {"uri": "/m"}}}]},
            "does not match pattern",
        ),
        ({"deployments": [{"name": "m"}]}, "missing property 'spec'"),
        ({"deployments": [{"name": "m", "spec": {}}]}, "missing property 'model'"),
        (
            {"adapters": [{"name": "a", "spec": {"source": {"uri": "/a"}}}]},
            "missing property 'deploymentRef'",
        ),
        ({"serviceAccount": {"create": "yes"}}, "got string, want boolean"),
        ({"serverImages": {"gpu": ""}}, "minLength"),
        ({"operator": {"watchNamespaces": ["team-*"]}}, "does not match pattern"),
        ({"operator": {"watchNamespaces": ["a,b"]}}, "does not match pattern"),
        ({"operator": {"watchNamespaces": ["a", "a"]}}, "items at 0 and 1 are equal"),
    ],
)
def test_wrong_values_are_rejected(values: dict[str, Any], message: str):
    with pytest.raises(helm_python.HelmValuesError, match=message):
        render(values)


# --- RBAC ---------------------------------------------------------------------------------------

# Granted beyond what the tests saw the operator send, each with the reason in clusterrole.yaml.
JUSTIFIED = {
    # server-side apply of a missing object is authorized as create too
    ("create", "apps", "deployments"),
    ("create", "leaderworkerset.x-k8s.io", "leaderworkersets"),
    ("create", "", "services"),
    ("create", "", "persistentvolumeclaims"),
    ("create", "policy", "poddisruptionbudgets"),
    ("create", "networking.k8s.io", "networkpolicies"),
    ("create", "monitoring.coreos.com", "servicemonitors"),
    ("create", "monitoring.coreos.com", "podmonitors"),
    ("create", "inference.networking.k8s.io", "inferencepools"),
    ("create", "keda.sh", "scaledobjects"),
    ("create", "http.keda.sh", "interceptorroutes"),
    ("create", "autoscaling", "horizontalpodautoscalers"),
    # the model cache claim is applied when a spec enables it (no kmock test does)
    ("get", "", "persistentvolumeclaims"),
    ("patch", "", "persistentvolumeclaims"),
    # pruning, shown for NetworkPolicies only in the tests; same code for every kind
    ("delete", "", "services"),
    ("delete", "monitoring.coreos.com", "servicemonitors"),
    ("delete", "monitoring.coreos.com", "podmonitors"),
    ("get", "", "pods"),
    # blockOwnerDeletion under OwnerReferencesPermissionEnforcement (kmock enforces no RBAC)
    ("update", "serving.vllm.ai", "vllmdeployments/finalizers"),
    # Kopf serving every namespace in a real cluster: CRDs installed after it started
    ("list", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions"),
}


# Kopf's peering object: a ClusterKopfPeering serving every namespace, a KopfPeering in each
# namespace it serves otherwise (the record has both: the tests run both modes).
CLUSTER_PEERING, NAMESPACED_PEERING = "clusterkopfpeerings", "kopfpeerings"
# Cluster-scoped: granted by the ClusterRole only, never needed serving listed namespaces.
CLUSTER_SCOPED = (CLUSTER_PEERING, "customresourcedefinitions", "namespaces")
SERVING_NAMESPACES = {"operator": {"watchNamespaces": ["team-a", "team-b"], "replicas": 2}}


def used() -> set[tuple[str, str, str]]:
    return {tuple(c) for c in json.loads(API_CALLS.read_text())}


def grants(role: dict) -> set[tuple[str, str, str]]:
    return {
        (verb, group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def granted(values: dict[str, Any] | None = None) -> set[tuple[str, str, str]]:
    """What the ClusterRole grants; by default with the peering of more than one replica."""
    (role,) = by_kind(
        own(render({"operator": {"replicas": 2}} if values is None else values)), "ClusterRole"
    )
    return grants(role)


def granted_in(values: dict[str, Any]) -> dict[str, set[tuple[str, str, str]]]:
    """What the operator's Role grants, per namespace (there is a Role only with
    operator.watchNamespaces); checks that its ServiceAccount is bound to each."""
    objects = [o for o in render(values) if not is_hook(o)]
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objects, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(objects, "RoleBinding")}
    assert roles.keys() == bindings.keys()
    for namespace, binding in bindings.items():
        name = roles[namespace]["metadata"]["name"]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": name}  # fmt: skip
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "vllm", "namespace": NAMESPACE}
        ]
    return {namespace: grants(role) for namespace, role in roles.items()}


def test_rbac_grants_every_call_the_operator_made():
    namespaced_peering = {c for c in used() if c[2] == NAMESPACED_PEERING}
    assert used() - namespaced_peering - granted() == set()


def test_rbac_grants_nothing_unused_or_unjustified():
    assert granted() - used() - JUSTIFIED == set()
    assert JUSTIFIED - granted() == set()  # a justification for nothing is stale
    assert not any("*" in part for grant in granted() for part in grant)


def test_no_rbac_on_secrets_in_any_mode():
    """The operator reads no Secret (a missing one shows in the pods' status); the admin key
    it signs with is mounted into its pod, not read through the API."""
    for values in (None, {}, SERVING_NAMESPACES):
        objects = [o for o in render(values) if not is_hook(o)]
        for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
            assert not [r for r in role["rules"] if "secrets" in r["resources"]], role
    assert not [c for c in used() if c[2] == "secrets"]


def test_serving_listed_namespaces_grants_the_same_rules_there_and_nothing_cluster_wide():
    """The RBAC coverage of an operator serving listed namespaces: in each, a Role grants every
    call the operator made but the cluster-scoped ones (tests/operator/test_process.py shows
    that such an operator sends none, and no request outside its namespaces), and nothing the
    ClusterRole would not."""
    objects = render(SERVING_NAMESPACES)  # hooks too: the CRD hook is off (crds.upgrade auto)
    assert by_kind(objects, "ClusterRole") == [] and by_kind(objects, "ClusterRoleBinding") == []
    roles = granted_in(SERVING_NAMESPACES)
    assert set(roles) == {"team-a", "team-b"}
    cluster_scoped = {c for c in used() if c[2] in CLUSTER_SCOPED}
    assert {c[2] for c in cluster_scoped} == {CLUSTER_PEERING}  # the record has them
    for namespace, granted_here in roles.items():
        assert used() - cluster_scoped - granted_here == set(), namespace
        assert granted_here - used() - JUSTIFIED == set(), namespace
        assert not any(resource in CLUSTER_SCOPED for _, _, resource in granted_here)
        # The ClusterRole's rules, here only; the peering in this namespace instead.
        cluster = {c for c in granted() if c[2] not in CLUSTER_SCOPED}
        assert {c for c in granted_here if c[2] != NAMESPACED_PEERING} == cluster
    # One replica: no peering at all.
    (alone,) = granted_in({"operator": {"watchNamespaces": ["team-a"]}}).values()
    assert not any(group == "kopf.dev" for _, group, _ in alone)


def test_serving_listed_namespaces_runs_kopf_with_a_namespace_flag_for_each():
    objects = render(SERVING_NAMESPACES)
    (deployment,) = by_kind(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if "namespace" in a] == ["--namespace=team-a", "--namespace=team-b"]
    (default,) = by_kind(render(), "Deployment")
    args = default["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if "namespace" in a] == ["--all-namespaces"]
    # Kopf's peering: a KopfPeering in each served namespace, no ClusterKopfPeering.
    peerings = by_kind(objects, "KopfPeering")
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings} == {
        ("team-a", "vllm"), ("team-b", "vllm")
    }  # fmt: skip
    assert by_kind(objects, "ClusterKopfPeering") == []
    assert by_kind(render({"operator": {"watchNamespaces": ["team-a"]}}), "KopfPeering") == []
    assert "in these namespaces only (operator.watchNamespaces):\n  team-a, team-b" in notes(
        SERVING_NAMESPACES
    )
    assert "in every namespace" in notes()


def test_models_from_values_need_the_release_namespace_served():
    values = {"operator": {"watchNamespaces": ["team-a"]}, "deployments": [CPU_MODEL]}
    with pytest.raises(Exception, match="leaves out the release's namespace vllm-system"):
        render(values)
    values["operator"]["watchNamespaces"].append(NAMESPACE)
    assert by_kind(render(values), "VLLMDeployment")


def test_one_operator_replica_runs_standalone_without_peering_rights():
    objects = render()
    (deployment,) = by_kind(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--standalone" in args
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not by_kind(objects, "ClusterKopfPeering") and not by_kind(
        objects, "PodDisruptionBudget"
    )
    assert not any(group == "kopf.dev" for _, group, _ in granted({}))


def test_more_operator_replicas_elect_a_leader_through_kopf_peering():
    objects = own(render({"operator": {"replicas": 3}}))
    (deployment,) = by_kind(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--peering=vllm" in container["args"] and "--standalone" not in container["args"]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "strategy" not in deployment["spec"]  # rolling: the standby takes over
    (peering,) = by_kind(objects, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "vllm"
    (pdb,) = by_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    (role,) = by_kind(objects, "ClusterRole")
    named = [r for r in role["rules"] if r["apiGroups"] == ["kopf.dev"] and "resourceNames" in r]
    assert named == [
        {
            "apiGroups": ["kopf.dev"],
            "resources": ["clusterkopfpeerings"],
            "resourceNames": ["vllm"],
            "verbs": ["get", "patch"],
        }
    ]
