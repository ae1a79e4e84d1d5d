"""Sample VLLMDeployment objects (as a user would `kubectl apply` them) for the operator tests."""

from __future__ import annotations

import copy
from typing import Any

from vllm_operator.model.spec import Images

from .tiny_model import CPU_ENGINE

IMAGES = Images(gpu="example.org/vllm-server:1-gpu", cpu="example.org/vllm-server:1-cpu")


def vllmd(name: str, spec: dict[str, Any], namespace: str = "models") -> dict[str, Any]:
    return {
        "apiVersion": "serving.vllm.ai/v1alpha1",
        "kind": "VLLMDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": copy.deepcopy(spec),
    }


# Good objects: each builds into a golden set of manifests (tests/golden/<name>.yaml).
GOOD = {
    "gpu-hf-minimal": vllmd("llama", {"model": {"uri": "hf://meta-llama/Llama-3.2-1B-Instruct"}}),
    "cpu-tiny": vllmd(
        "tiny",
        {
            "model": {"uri": "/models/tiny-llama", "servedName": "tiny-llama"},
            "accelerator": "CPU",
            "resources": {"requests": {"cpu": 2, "memory": "4Gi"}, "limits": {"memory": "6Gi"}},
            "engine": CPU_ENGINE,
            "orca": {"formats": ["TEXT", "JSON"], "grpcPort": 9001, "minReportInterval": "0.5"},
        },
    ),
    "gpu-everything": vllmd(
        "qwen",
        {
            "model": {
                "uri": "pvc://models/qwen/Qwen2.5-7B",
                "servedName": "qwen",
                "revision": "v1",
            },
            "replicas": 3,
            "image": "example.org/custom:2",
            "imagePullPolicy": "IfNotPresent",
            "imagePullSecrets": [{"name": "registry"}],
            "gpusPerReplica": 2,
            "engine": {"tensorParallelSize": 2, "gpuMemoryUtilization": 0.85},
            "lora": {"enabled": True, "maxLoras": 8, "maxRank": 64},
            "apiKeySecret": {"name": "qwen-api"},
            "hfTokenSecret": {"name": "hf", "key": "hf-token"},
            # Three replicas share the cache: ReadWriteMany (a ReadWriteOnce claim is one node's).
            "modelCache": {
                "enabled": True,
                "size": "200Gi",
                "storageClassName": "fast",
                "accessMode": "ReadWriteMany",
            },
            "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}],
            "podLabels": {"team": "ml"},
            "podAnnotations": {"example.org/note": "x"},
            "nodeSelector": {"gpu": "a100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"team": "ml"}},
                            },
                        }
                    ]
                }
            },
            "runtimeClassName": "nvidia",
            "priorityClassName": "high",
            "terminationGracePeriodSeconds": 300,
            "podDisruptionBudget": {"maxUnavailable": "34%"},
            "monitoring": {
                "serviceMonitor": True,
                "podMonitor": True,
                "interval": "30s",
                "labels": {"release": "prometheus"},
            },
            "networkPolicy": {
                "enabled": True,
                "from": [{"namespaceSelector": {"matchLabels": {"gateway": "true"}}}],
                "metricsFrom": [
                    {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}},
                ],
            },
            "orca": {"grpcPort": 9001},
            "inferencePool": {
                "name": "qwen-pool",
                "endpointPickerRef": {"name": "qwen-epp", "port": {"number": 9002}},
            },
        },
    ),
}
