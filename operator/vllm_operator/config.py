"""The operator's settings, read from its environment once, at startup (the chart sets them).

| variable | what | default |
| --- | --- | --- |
| `VLLM_SERVER_IMAGE_GPU`, `VLLM_SERVER_IMAGE_CPU` | server images per accelerator | built in |
| `POD_NAMESPACE` | the operator's namespace (let through NetworkPolicies) | `vllm-system` |
| `VLLM_OPERATOR_METRICS_PORT` | serve Prometheus metrics there | off |
| `VLLM_OPERATOR_DRIFT_CHECK_SECONDS` | how often every VLLMDeployment is checked for drift | 60 |
| `VLLM_OPERATOR_PROGRESS_CHECK_SECONDS` | how often starting servers are asked their phase | 15 |
| `POD_ID` | this replica's name among peers (`--peering`) | `vllm-operator` sets one |
| `VLLM_OPERATOR_ADMIN_KEY_FILE` | the Ed25519 key (PEM) that signs admin calls | one per start |
| `VLLM_OPERATOR_PLATFORM_ASSIGNS_UIDS` | `true`: model pods set no UID, GID, fsGroup | `false` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .model.spec import Images

IMAGE_GPU_ENV, IMAGE_CPU_ENV = "VLLM_SERVER_IMAGE_GPU", "VLLM_SERVER_IMAGE_CPU"
NAMESPACE_ENV = "POD_NAMESPACE"
METRICS_PORT_ENV = "VLLM_OPERATOR_METRICS_PORT"
DRIFT_CHECK_SECONDS_ENV = "VLLM_OPERATOR_DRIFT_CHECK_SECONDS"
PROGRESS_CHECK_SECONDS_ENV = "VLLM_OPERATOR_PROGRESS_CHECK_SECONDS"
ADMIN_KEY_FILE_ENV = "VLLM_OPERATOR_ADMIN_KEY_FILE"
PLATFORM_UIDS_ENV = "VLLM_OPERATOR_PLATFORM_ASSIGNS_UIDS"
POD_ID_ENV = "POD_ID"  # Kopf's identity of this replica; the chart sets it to the pod's name

DEFAULT_IMAGES = Images(
    gpu="ghcr.io/vllm-k8s/vllm-server:0.1.0", cpu="ghcr.io/vllm-k8s/vllm-server:0.1.0-cpu"
)


class SettingsError(ValueError):
    """An environment variable the operator cannot use; the message names it."""


def _seconds(environ: Mapping[str, str], variable: str, default: str) -> float:
    text = environ.get(variable) or default
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 86400:
        raise SettingsError(f"{variable}={text!r}: seconds, above 0")
    return seconds


@dataclass(frozen=True)
class Settings:
    images: Images
    namespace: str  # where the operator runs (its pods are let through NetworkPolicies)
    metrics_port: int | None = None
    drift_check_seconds: float = 60.0
    progress_check_seconds: float = 15.0
    pod_id: str | None = None
    admin_key_file: str | None = None  # else a key of this process alone (see lifecycle.start)
    # The servers' admin ports take tokens signed by this key's private half (base64 of its raw
    # bytes); filled in once the key is loaded.
    admin_public_key: str | None = None
    # The platform gives pods their UIDs (OpenShift's restricted-v2 SCC refuses fixed ones
    # outside the namespace's range): model pods then name none unless their spec does.
    platform_assigns_uids: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        port = environ.get(METRICS_PORT_ENV) or None
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise SettingsError(f"{METRICS_PORT_ENV}={port!r}: a port from 1 to 65535")
        seconds = _seconds(environ, DRIFT_CHECK_SECONDS_ENV, "60")
        progress = _seconds(environ, PROGRESS_CHECK_SECONDS_ENV, "15")
        uids = (environ.get(PLATFORM_UIDS_ENV) or "false").lower()
        if uids not in ("true", "false"):
            raise SettingsError(f"{PLATFORM_UIDS_ENV}={uids!r}: true or false")
        return cls(
            images=Images(
                gpu=environ.get(IMAGE_GPU_ENV) or DEFAULT_IMAGES.gpu,
                cpu=environ.get(IMAGE_CPU_ENV) or DEFAULT_IMAGES.cpu,
            ),
            namespace=environ.get(NAMESPACE_ENV) or "vllm-system",
            metrics_port=int(port) if port else None,
            drift_check_seconds=seconds,
            progress_check_seconds=progress,
            pod_id=environ.get(POD_ID_ENV) or None,
            admin_key_file=environ.get(ADMIN_KEY_FILE_ENV) or None,
            platform_assigns_uids=uids == "true",
        )
