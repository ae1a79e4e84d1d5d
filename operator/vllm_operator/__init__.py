"""A Kopf operator that runs vLLM on Kubernetes: VLLMDeployment and LoraAdapter resources."""

__version__ = "0.1.0"

GROUP = "serving.vllm.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# The field manager of every object the operator applies, and the value of the managed-by label.
MANAGER = "vllm-operator"
