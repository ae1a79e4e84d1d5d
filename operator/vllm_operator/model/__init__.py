"""The pure layer: custom resources parsed into frozen dataclasses, the objects built from them,
the LoRA placement plan, status and conditions, drift comparison. No I/O: nothing here imports
Kopf, an HTTP client or a clock (callers pass `now`), so every function is tested without a
cluster or a server."""
