"""Every touch of vLLM's internals, written against vLLM 0.32.

vLLM moves its internal paths and private methods between releases, so the rest of the package
talks to the small surface of this package, in two modules for the two kinds of process vLLM
runs:

- `api`: everything the API process uses: the launcher's steps (vLLM's own `setup_server` and
  `run_server_worker` pieces, with room for our hooks between them, and vLLM's log lines), the
  `Engine` facade, vLLM's app and HTTP servers. Imported by `launcher` (and so by nothing that
  runs before vLLM is imported).
- `engine`: the engine process's and the workers' startup hooks, used by `engine_plugin`, which
  vLLM loads in every process it starts (engine core and tensor-parallel workers included): it
  imports what those processes have already loaded, not the launcher's modules, uvicorn or the
  app.
- `headless`: the worker role of a multi-node replica (`--headless`): vLLM's `run_headless`,
  observed. Imported by `launcher` for that role only.

This module holds the tables only and imports no vLLM (every import of `engine` or `api` runs it
first): `VLLM_SYMBOLS` lists each vLLM symbol the package relies on, `SERVE_ARGS` each
`vllm serve` argument it reads. `tests/server/test_vllm_compat.py` checks them against the
installed vLLM in seconds, and that every vLLM import of the package is in the table. A new vLLM
gets a new package, this one its draft.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Symbol:
    """One vLLM symbol this package relies on."""

    module: str
    name: str  # inside the module; "Class.attribute" for a method or property
    params: tuple[str, ...] = ()  # its leading parameters (after self), as called or overridden
    attrs: tuple[str, ...] = ()  # attributes read or replaced on its instances (or, for a
    # function, set on the object it fills)


_LAUNCHER = "vllm.entrypoints.launchers"
_API_UTILS = "vllm.entrypoints.serve.utils.api_utils"
VLLM_SYMBOLS: tuple[Symbol, ...] = (
    # --- api --------------------------------------------------------------------------------
    # Parsing and checking `vllm serve` arguments, as vLLM's api_server entry point does.
    Symbol(_API_UTILS, "cli_env_setup"),
    Symbol("vllm.utils.argparse_utils", "FlexibleArgumentParser"),
    Symbol(f"{_LAUNCHER}.cli_args", "make_arg_parser", params=("parser",)),
    Symbol("vllm.logger", "configure_logging_from_args", params=("args",)),
    Symbol(f"{_LAUNCHER}.cli_args", "validate_parsed_serve_args", params=("args",)),
    Symbol("vllm.envs", "VLLM_ALLOW_RUNTIME_LORA_UPDATING"),
    # `setup_server`'s steps, but its socket: its log lines first.
    Symbol("vllm.logger", "init_logger", params=("name",)),
    Symbol("vllm.version", "__version__"),
    Symbol(_API_UTILS, "log_version_and_model", params=("lgr", "version", "model_name")),
    Symbol(_API_UTILS, "log_non_default_args", params=("args",)),
    Symbol("vllm.tool_parsers", "ToolParserManager.import_tool_parser", params=("plugin_path",)),
    Symbol(
        "vllm.reasoning",
        "ReasoningParserManager.import_reasoning_parser",
        params=("plugin_path",),
    ),
    Symbol(f"{_LAUNCHER}.launcher", "validate_api_server_args", params=("args",)),
    Symbol("vllm.utils.system_utils", "set_ulimit"),
    Symbol("vllm.utils.network_utils", "is_valid_ipv6_address", params=("address",)),
    # The engine client and vLLM's app, as `run_server_worker` and `build_and_serve` build them.
    Symbol(f"{_LAUNCHER}.api_server.entry", "build_async_engine_client", params=("args",)),
    Symbol(
        "vllm.v1.engine.async_llm",
        "AsyncLLM",
        attrs=("vllm_config", "model_config", "output_processor", "logger_manager"),
    ),
    Symbol("vllm.v1.engine.async_llm", "AsyncLLM.errored"),
    Symbol("vllm.v1.engine.async_llm", "AsyncLLM.is_sleeping"),
    Symbol("vllm.v1.engine.async_llm", "AsyncLLM.get_supported_tasks"),
    Symbol("vllm.v1.engine.async_llm", "AsyncLLM.shutdown", params=("timeout",)),
    Symbol("vllm.config", "VllmConfig", attrs=("model_config", "scheduler_config")),
    Symbol("vllm.config", "ModelConfig", attrs=("enable_sleep_mode",)),
    Symbol("vllm.config", "SchedulerConfig", attrs=("max_num_seqs",)),
    Symbol(f"{_LAUNCHER}.app", "build_app", params=("args", "supported_tasks", "model_config")),
    Symbol(
        f"{_LAUNCHER}.api_server.app_state",
        "init_app_state",
        params=("engine_client", "state", "args", "supported_tasks"),
        attrs=("openai_serving_models",),
    ),
    # Refusing a LoRA adapter before the engine loads it.
    Symbol(
        "vllm.entrypoints.openai.models.serving",
        "OpenAIServingModels.load_lora_adapter",
        params=("request", "base_model_name"),
    ),
    # vLLM's LoRA resolvers (loading what a request's `model` names): dropped, or checked.
    Symbol(
        "vllm.entrypoints.openai.models.serving",
        "OpenAIServingModels",
        attrs=("lora_resolvers",),
    ),
    Symbol(
        "vllm.entrypoints.openai.models.serving",
        "OpenAIServingModels.resolve_lora",
        params=("lora_name",),
    ),
    Symbol(
        "vllm.lora.resolver",
        "LoRAResolver.resolve_lora",
        params=("base_model_name", "lora_name"),
    ),
    Symbol("vllm.lora.request", "LoRARequest", attrs=("lora_path",)),
    Symbol(
        "vllm.entrypoints.serve.lora.protocol",
        "LoadLoRAAdapterRequest",
        attrs=("lora_name", "lora_path"),
    ),
    Symbol("vllm.entrypoints.serve.engine.protocol", "ErrorResponse", attrs=("error",)),
    Symbol(
        "vllm.entrypoints.serve.engine.protocol",
        "ErrorInfo",
        attrs=("message", "type", "code"),
    ),
    # The API port's app without the LoRA admin routes: vLLM's LoRA router's endpoints (the
    # routes of the app, SageMaker's included, that serve them are left out of it).
    Symbol("vllm.entrypoints.serve.lora.api_router", "router", attrs=("routes",)),
    # The admin port's app: the operator's token instead of vLLM's `--api-key` check.
    Symbol("vllm.entrypoints.serve.middleware.authenticate", "AuthenticationMiddleware"),
    # Serving HTTP, on the API socket and the admin socket.
    Symbol(f"{_LAUNCHER}.launcher", "serve_http", params=("app", "sock", "enable_ssl_refresh")),
    Symbol(f"{_LAUNCHER}.launcher", "NoSignalServer", params=("config",)),
    Symbol(
        f"{_LAUNCHER}.utils.ssl",
        "SSLCertRefresher",
        params=("ssl_context", "key_path", "cert_path", "ca_path"),
    ),
    Symbol(f"{_LAUNCHER}.utils.server_utils", "get_uvicorn_log_config", params=("args",)),
    Symbol(f"{_LAUNCHER}.utils.constants", "H11_MAX_HEADER_COUNT_DEFAULT"),
    Symbol(f"{_LAUNCHER}.utils.constants", "H11_MAX_INCOMPLETE_EVENT_SIZE_DEFAULT"),
    Symbol("vllm.envs", "VLLM_HTTP_TIMEOUT_KEEP_ALIVE"),
    # Token load: vLLM's output processor, subclassed and swapped onto the engine's instance.
    Symbol("vllm.v1.engine.output_processor", "OutputProcessor", attrs=("request_states",)),
    Symbol("vllm.v1.engine.output_processor", "OutputProcessor.add_request", params=("request",)),
    Symbol(
        "vllm.v1.engine.output_processor",
        "OutputProcessor._update_stats_from_output",
        params=("req_state", "engine_core_output"),
    ),
    Symbol(
        "vllm.v1.engine.output_processor",
        "OutputProcessor._finish_request",
        params=("req_state",),
    ),
    Symbol(
        "vllm.v1.engine.output_processor",
        "OutputProcessor.abort_requests",
        params=("request_ids", "internal"),
    ),
    Symbol("vllm.v1.engine.output_processor", "RequestState", attrs=("request_id", "prompt_len")),
    Symbol("vllm.v1.engine", "EngineCoreRequest", attrs=("request_id",)),
    Symbol("vllm.v1.engine", "EngineCoreOutput", attrs=("new_token_ids",)),
    # Engine load for ORCA: a stat logger added to the engine client's.
    Symbol("vllm.v1.metrics.loggers", "StatLoggerManager", attrs=("stat_loggers",)),
    Symbol("vllm.v1.metrics.loggers", "AggregateStatLoggerBase"),
    Symbol(
        "vllm.v1.metrics.loggers",
        "AggregateStatLoggerBase.record",
        params=("scheduler_stats", "iteration_stats", "mm_cache_stats", "engine_idx"),
    ),
    Symbol("vllm.v1.metrics.loggers", "AggregateStatLoggerBase.log_engine_initialized"),
    Symbol(
        "vllm.v1.metrics.loggers",
        "AggregateStatLoggerBase.record_admission_rejection",
        params=("reason",),
    ),
    Symbol(
        "vllm.v1.metrics.stats",
        "SchedulerStats",
        attrs=(
            "num_running_reqs",
            "num_waiting_reqs",
            "kv_cache_usage",
            "running_lora_adapters",
            "waiting_lora_adapters",
        ),
    ),
    # --- headless ---------------------------------------------------------------------------
    # vLLM's headless node, run as is, its executor class replaced by an observing subclass.
    Symbol("vllm.entrypoints.cli", "serve"),
    Symbol("vllm.entrypoints.cli.serve", "run_headless", params=("args",)),
    Symbol("vllm.entrypoints.cli.serve", "MultiprocExecutor"),
    Symbol("vllm.v1.executor.multiproc_executor", "MultiprocExecutor", attrs=("is_failed",)),
    Symbol(
        "vllm.v1.executor.multiproc_executor",
        "MultiprocExecutor.start_worker_monitor",
        params=("inline",),
    ),
    # --- engine -----------------------------------------------------------------------------
    # The engine process's startup steps.
    Symbol("vllm.v1.engine.core", "EngineCore", attrs=("model_executor",)),
    Symbol("vllm.v1.engine.core", "EngineCore._initialize_kv_caches", params=("vllm_config",)),
    Symbol("vllm.v1.executor", "Executor.compile_or_warm_up_model"),
    # A worker process's startup (device and torch.distributed, then the weights).
    Symbol("vllm.v1.worker.worker_base", "WorkerWrapperBase", attrs=("vllm_config",)),
    Symbol("vllm.v1.worker.worker_base", "WorkerWrapperBase.init_device"),
    Symbol("vllm.config", "ParallelConfig", attrs=("nnodes",)),
    Symbol("vllm.config", "VllmConfig", attrs=("parallel_config",)),
)

# The `vllm serve` arguments this package reads by name (their `dest`s).
SERVE_ARGS = frozenset(
    {
        "api_key",
        "api_server_count",
        "data_parallel_multi_port_external_lb",
        "disable_log_stats",
        "disable_uvicorn_access_log",
        "enable_lora",
        "enable_ssl_refresh",
        "grpc",
        "h11_max_header_count",
        "h11_max_incomplete_event_size",
        "data_parallel_size",
        "headless",
        "master_addr",
        "master_port",
        "nnodes",
        "node_rank",
        "host",
        "max_lora_rank",
        "middleware",
        "model",
        "port",
        "reasoning_parser_plugin",
        "served_model_name",
        "ssl_ca_certs",
        "ssl_cert_reqs",
        "ssl_certfile",
        "ssl_ciphers",
        "ssl_keyfile",
        "tool_parser_plugin",
        "uds",
        "uvicorn_log_level",
    }
)
