"""The vLLM servers' admin port, over HTTP: what adapters a server holds, load, unload.

Each call has its own timeout; the reconciler fans them out with bounded concurrency. A server
answers with its instance id (`vllm-instance-id`, new on every start) on every response.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from ..model.adapters import CallResult, ServerReport

INSTANCE_HEADER = "vllm-instance-id"
CALL_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=3)
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5, connect=2)


class VLLMAdminClient:
    def __init__(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

    async def close(self) -> None:
        await self._session.close()

    @staticmethod
    def _headers(api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def report(self, url: str, api_key: str | None) -> ServerReport | None:
        """The server's adapters, or None if it does not serve (yet)."""
        try:
            async with self._session.get(
                f"{url}/v1/models", headers=self._headers(api_key), timeout=PROBE_TIMEOUT
            ) as response:
                if response.status != 200:
                    return None
                body: dict[str, Any] = await response.json()
                instance = response.headers.get(INSTANCE_HEADER, "")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        adapters = {
            m["id"]: m.get("root") or ""
            for m in body.get("data") or []
            if m.get("parent")  # adapters name their base model; the base model does not
        }
        return ServerReport(instance, adapters)

    async def load(
        self, url: str, name: str, path: str, *, inplace: bool, api_key: str | None
    ) -> CallResult:
        body = {"lora_name": name, "lora_path": path, "load_inplace": inplace}
        result = await self._post(f"{url}/v1/load_lora_adapter", body, api_key)
        if not result.ok and "already been loaded" in result.message:
            result = CallResult(True)  # someone (an earlier, interrupted reconcile) was first
        return result

    async def unload(self, url: str, name: str, *, api_key: str | None) -> CallResult:
        result = await self._post(f"{url}/v1/unload_lora_adapter", {"lora_name": name}, api_key)
        if not result.ok and result.message.startswith("404"):
            result = CallResult(True)  # not loaded: that is what we wanted
        return result

    async def _post(self, url: str, body: dict[str, Any], api_key: str | None) -> CallResult:
        try:
            async with self._session.post(
                url, json=body, headers=self._headers(api_key), timeout=CALL_TIMEOUT
            ) as response:
                if response.status == 200:
                    return CallResult(True)
                text = await response.text()
                try:
                    message = (await response.json(content_type=None))["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = text.strip()
                return CallResult(False, f"{response.status}: {message}")
        except (aiohttp.ClientError, TimeoutError) as e:
            return CallResult(False, f"server unreachable: {e or type(e).__name__}")
