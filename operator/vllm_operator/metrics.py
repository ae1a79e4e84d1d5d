"""The operator's own Prometheus metrics (prometheus-client), served on the port set by
`VLLM_OPERATOR_METRICS_PORT` (the chart's `metrics` port): how reconciles go, what they cost,
what the LoRA calls to the servers return, and which replica leads."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_serving = False  # the endpoint is up (once per process)

RECONCILES = Counter(
    "vllm_operator_reconciles_total",
    "Reconciles, by kind (VLLMDeployment or the LoRA adapters of one) and result "
    "(ok, retry: waiting helps, invalid: the spec cannot work, error: unexpected)",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "vllm_operator_reconcile_duration_seconds",
    "Time a reconcile took, API and server calls included",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
APPLIES = Counter(
    "vllm_operator_applies_total",
    "Objects applied (server-side apply) because they were missing or had drifted, by kind",
    ["kind"],
)
LORA_CALLS = Counter(
    "vllm_operator_lora_calls_total",
    "LoRA load/unload calls to the servers, by operation and result (ok or error)",
    ["operation", "result"],
)
LEADER = Gauge(
    "vllm_operator_leader",
    "1 while this replica is the one that works (always, with one replica); 0 on standby",
)


def serve(port: int) -> bool:
    """Start the metrics endpoint (a thread of prometheus-client's) once per process (Kopf
    retries a failed startup), on IPv6 and IPv4 where the host has IPv6; False if it already
    runs."""
    global _serving
    if _serving:
        return False
    try:
        start_http_server(port, addr="::")
    except OSError:  # no IPv6 on this host
        start_http_server(port)
    _serving = True
    return True
