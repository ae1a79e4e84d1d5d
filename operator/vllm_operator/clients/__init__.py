"""The I/O to the outside: the Kubernetes API (`kube`) and the vLLM servers' admin port
(`vllm_admin`). Plain calls with timeouts; no decisions and no Kopf."""
