"""The Kubernetes API, as the reconciler uses it: async HTTP (aiohttp, like Kopf itself) with
credentials loaded by the official client's config loaders (in-cluster or kubeconfig).

Objects are plain dicts. Every call has a timeout. Children are written with server-side apply
under one field manager (`force=True`, as Kubernetes advises controllers).
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .. import MANAGER

TIMEOUT = aiohttp.ClientTimeout(total=15)
DISCOVERY_TTL = 300.0  # seconds: CRDs installed later (e.g. the Prometheus Operator's) show up
# Set while a drift check reads everything from the watch cache: discovery answers are used as
# last seen, however old, so that a cluster at rest gets no request at all.
_DISCOVERY_AS_KNOWN = contextvars.ContextVar("discovery_as_known", default=False)


@contextlib.contextmanager
def discovery_as_known() -> Iterator[None]:
    """Within: `Kube.serves` asks the API server only about groups it never asked about."""
    token = _DISCOVERY_AS_KNOWN.set(True)
    try:
        yield
    finally:
        _DISCOVERY_AS_KNOWN.reset(token)


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = (
            f"/api/{self.api_version}"
            if "/" not in self.api_version
            else (f"/apis/{self.api_version}")
        )
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


KINDS = {
    k.kind: k
    for k in (
        Kind("v1", "Pod", "pods"),
        Kind("v1", "Service", "services"),
        Kind("v1", "Event", "events"),
        Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("apps/v1", "ReplicaSet", "replicasets"),
        Kind("apps/v1", "StatefulSet", "statefulsets"),
        Kind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
        Kind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors"),
        Kind("inference.networking.k8s.io/v1", "InferencePool", "inferencepools"),
        Kind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
        Kind("http.keda.sh/v1beta1", "InterceptorRoute", "interceptorroutes"),
        Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        Kind("serving.vllm.ai/v1alpha1", "VLLMDeployment", "vllmdeployments"),
        Kind("serving.vllm.ai/v1alpha1", "LoraAdapter", "loraadapters"),
        Kind("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False),
        Kind("kopf.dev/v1", "KopfPeering", "kopfpeerings"),
        # Only the chart's CRD hook (crd_upgrade.py) writes these.
        Kind(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            namespaced=False,
        ),
    )
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotFound(ApiError):
    pass


def _connection_settings() -> tuple[Any, ssl.SSLContext | bool]:
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)
    if not cfg.host.startswith("https"):
        return cfg, False
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    if not cfg.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return cfg, context


class Kube:
    def __init__(self, host: str, ssl_: ssl.SSLContext | bool, cfg: Any = None) -> None:
        self.host = host.rstrip("/")
        self._cfg = cfg  # kubernetes.client.Configuration: credentials, refreshed per request
        self._session = aiohttp.ClientSession(
            timeout=TIMEOUT, connector=aiohttp.TCPConnector(ssl=ssl_, limit=32)
        )
        self._discovered: dict[str, tuple[float, set[str]]] = {}

    @classmethod
    def connect(cls) -> Kube:
        cfg, ssl_ = _connection_settings()
        return cls(cfg.host, ssl_, cfg)

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Content-Type": content_type} if body is not None else {}
        headers |= self._auth()
        try:
            return await self._request(method, path, body, params, headers)
        except (aiohttp.ClientError, TimeoutError) as e:  # asyncio.TimeoutError on Python 3.10
            raise ApiError(0, f"{method} {path}: {e or type(e).__name__}") from e

    def _auth(self) -> dict[str, str]:
        """The bearer token, refreshed as the client's loaders do (the in-cluster token file
        rotates; kubeconfig exec plugins issue short-lived tokens)."""
        cfg = self._cfg
        if cfg is None:
            return {}
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        token = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")
        if not token:
            return {}
        return {"Authorization": token if " " in token else f"Bearer {token}"}

    async def _request(self, method, path, body, params, headers) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        async with self._session.request(
            method, self.host + path, json=body, params=params, headers=headers
        ) as response:
            if response.status >= 400:
                text = await response.text()
                try:
                    message = (await response.json(content_type=None)).get("message", text)
                except ValueError:
                    message = text
                error = NotFound if response.status == 404 else ApiError
                raise error(response.status, message)
            return await response.json(content_type=None) if response.content_length != 0 else {}

    # --- typed helpers ----------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return await self.request("GET", KINDS[kind].path(namespace, name))

    async def get_or_none(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.get(kind, namespace, name)
        except NotFound:
            return None

    async def list_all(self, kind: str, namespace: str | None = None) -> list[dict]:
        """Every object of `kind` in `namespace`, or in all namespaces."""
        return list((await self.request("GET", KINDS[kind].path(namespace))).get("items") or [])

    async def list(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        result = await self.request(
            "GET", KINDS[kind].path(namespace), params={"labelSelector": selector}
        )
        return list(result.get("items") or [])

    async def lora_adapters(self, namespace: str, deployment: str) -> list[dict]:
        """The LoraAdapters of `namespace` whose spec.deploymentRef names `deployment`."""
        return [
            adapter
            for adapter in await self.list("LoraAdapter", namespace, {})
            if ((adapter.get("spec") or {}).get("deploymentRef") or {}).get("name") == deployment
        ]

    async def apply(self, obj: Mapping[str, Any], *, manager: str = MANAGER) -> dict[str, Any]:
        """Server-side apply of `obj` (which holds only the fields we own)."""
        meta = obj["metadata"]
        return await self.request(
            "PATCH",
            KINDS[obj["kind"]].path(meta.get("namespace"), meta["name"]),
            body=obj,
            params={"fieldManager": manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create `obj` (for objects never written again once they exist)."""
        meta = obj["metadata"]
        return await self.request(
            "POST",
            KINDS[obj["kind"]].path(meta.get("namespace")),
            body=obj,
            params={"fieldManager": MANAGER},
        )

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self.request("DELETE", KINDS[kind].path(namespace, name))

    async def patch_status(self, kind: str, namespace: str, name: str, status: Any) -> dict:
        return await self.request(
            "PATCH",
            KINDS[kind].path(namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    async def set_pod_condition(self, namespace: str, name: str, condition: Any) -> None:
        """Set one condition of a pod's status (a strategic merge keyed by type, so the
        kubelet's own conditions stay as they are)."""
        with contextlib.suppress(NotFound):  # the pod went away meanwhile
            await self.request(
                "PATCH",
                KINDS["Pod"].path(namespace, name) + "/status",
                body={"status": {"conditions": [condition]}},
                content_type="application/strategic-merge-patch+json",
            )

    async def serves(self, kind: str) -> bool:
        """Whether the API server serves `kind` (e.g. the Prometheus Operator's CRDs)."""
        k = KINDS[kind]
        cached = self._discovered.get(k.api_version)
        stale = cached is not None and time.monotonic() - cached[0] > DISCOVERY_TTL
        if cached is None or (stale and not _DISCOVERY_AS_KNOWN.get()):
            try:
                root = "/apis" if "/" in k.api_version else "/api"  # the core group's
                resources = await self.request("GET", f"{root}/{k.api_version}")
                names = {r["name"] for r in resources.get("resources") or []}
            except NotFound:
                names = set()
            # Other errors propagate (and are retried); only answers are cached.
            cached = self._discovered[k.api_version] = (time.monotonic(), names)
        return k.plural in cached[1]
