"""vLLM's LoRA resolvers load the adapter a completion request names as its `model`, for any API
client, past the server's LoRA load checks (`OpenAIServingModels.resolve_lora` asks the engine
itself). With `--admin-port` they are off; without, what they find goes through the checks.

The fast tests run vLLM's own `resolve_lora` and filesystem resolver against a test double of
its `OpenAIServingModels` instance (an engine that records what it is asked to load); the last
one starts a real server with `VLLM_LORA_RESOLVER_CACHE_DIR`."""

from __future__ import annotations

import asyncio
import shutil
import types
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from vllm_testkit.servers import SERVED_NAME, ext_server, free_port

pytestmark = pytest.mark.vllm


class RecordingEngine:
    """The engine client, as `resolve_lora` uses it: records the adapters it is asked to load."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    async def add_lora(self, request: object) -> bool:
        self.loaded.append(request.lora_path)  # type: ignore[attr-defined]
        return True


class ServingModelsDouble:
    """What vLLM's `OpenAIServingModels.resolve_lora` reads of its instance, with vLLM's
    filesystem resolver over `cache_dir` (as `VLLM_LORA_RESOLVER_CACHE_DIR` registers it)."""

    def __init__(self, cache_dir: Path, base_model: str) -> None:
        from vllm.plugins.lora_resolvers.filesystem_resolver import FilesystemResolver
        from vllm.utils.counter import AtomicCounter

        self.engine_client = RecordingEngine()
        self.model_config = types.SimpleNamespace(model=base_model)
        self.lora_requests: dict[str, object] = {}
        self.lora_id_counter = AtomicCounter(0)
        self.lora_resolver_lock: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.lora_resolvers = [FilesystemResolver(str(cache_dir))]

    def resolve(self, name: str) -> object:
        """vLLM's own `resolve_lora`, on this instance."""
        from vllm.entrypoints.openai.models.serving import OpenAIServingModels

        return asyncio.run(OpenAIServingModels.resolve_lora(self, name))  # type: ignore[arg-type]


def adapter(where: Path, base_model: str) -> Path:
    """A directory the filesystem resolver takes for an adapter of `base_model`."""
    where.mkdir(parents=True)
    (where / "adapter_config.json").write_text(
        f'{{"peft_type": "LORA", "base_model_name_or_path": "{base_model}", "r": 8}}'
    )
    return where


BASE = "/models/base"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(cache dir with adapter `sql`, allowed root, an adapter outside both)."""
    cache, root, outside = tmp_path / "cache", tmp_path / "root", tmp_path / "outside"
    adapter(cache / "sql", BASE)
    root.mkdir()
    adapter(outside, BASE)
    return cache, root, outside


def restricted(models: ServingModelsDouble, roots: list[str] | None, *, off: bool) -> None:
    from vllm_server_ext.lora_checks import lora_load_error
    from vllm_server_ext.vllm_0_32.api import restrict_lora_resolvers

    app = types.SimpleNamespace(state=types.SimpleNamespace(openai_serving_models=models))
    restrict_lora_resolvers(
        app,  # type: ignore[arg-type]
        lambda name, path: lora_load_error(name, path, 8, roots),
        off=off,
    )


def test_stock_vllm_loads_whatever_a_client_names(layout):
    """The finding: vLLM's resolver loads `sql` and escapes its directory (`/abs`, `../x`)."""
    cache, _, outside = layout
    models = ServingModelsDouble(cache, BASE)
    for name in ("sql", str(outside), f"../{outside.name}"):
        assert not hasattr(models.resolve(name), "error"), name
    assert len(models.engine_client.loaded) == 3


def test_with_an_admin_port_no_resolver_loads_anything(layout):
    cache, root, outside = layout
    models = ServingModelsDouble(cache, BASE)
    restricted(models, [str(root)], off=True)
    for name in ("sql", str(outside), f"../{outside.name}"):
        answer = models.resolve(name)
        assert answer.error.code == 404, name  # type: ignore[attr-defined]
    assert models.engine_client.loaded == []


def test_without_an_admin_port_resolved_adapters_pass_the_allowed_roots(layout):
    cache, root, outside = layout
    shutil.move(cache / "sql", root / "sql")
    (cache / "sql").symlink_to(root / "sql", target_is_directory=True)
    models = ServingModelsDouble(cache, BASE)
    restricted(models, [str(root)], off=False)
    for name in (str(outside), f"../{outside.name}"):
        assert models.resolve(name).error.code == 404, name  # type: ignore[attr-defined]
    assert not hasattr(models.resolve("sql"), "error")  # its real path is inside the root
    assert models.engine_client.loaded == [str(cache / "sql")]


def test_without_an_admin_port_or_roots_vllm_resolvers_still_work(layout):
    cache, _, _ = layout
    models = ServingModelsDouble(cache, BASE)
    restricted(models, None, off=False)
    assert not hasattr(models.resolve("sql"), "error")
    assert models.engine_client.loaded == [str(cache / "sql")]


# --- a real server -----------------------------------------------------------------------------


def test_the_api_port_cannot_load_an_adapter_through_a_resolver(
    tiny_model: Path, tiny_lora: Path, tmp_path: Path
):
    cache = tmp_path / "resolver-cache"
    cache.mkdir()
    shutil.copytree(tiny_lora, cache / "sql")
    proc = ext_server(
        tiny_model, tmp_path / "server.log",
        "--enable-lora", "--max-loras", "2", "--max-lora-rank", "8",
        env={"VLLM_LORA_RESOLVER_CACHE_DIR": str(cache)},
    )  # fmt: skip
    proc.admin_port = free_port()
    proc.start()
    try:
        proc.wait_ready()
        reply = httpx.post(
            f"{proc.url}/v1/completions",
            json={"model": "sql", "prompt": "hello", "max_tokens": 2},
            timeout=60,
        )
        assert reply.status_code == 404, reply.text
        models = httpx.get(f"{proc.admin_url}/v1/models", timeout=30).json()["data"]
        assert [m["id"] for m in models] == [SERVED_NAME]
        assert "vLLM's LoRA resolvers are off" in proc.log()
    finally:
        assert proc.stop() == 0, proc.log()[-3000:]
