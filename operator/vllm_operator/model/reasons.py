"""Condition and event reasons (CamelCase), in one place."""

# VLLMDeployment conditions
MINIMUM_REPLICAS_READY = "MinimumReplicasReady"
NO_REPLICA_READY = "NoReplicaReady"
SCALED_TO_ZERO = "ScaledToZero"
ROLLING_OUT = "RollingOut"
ROLLOUT_COMPLETE = "RolloutComplete"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
REPLICA_FAILURE = "ReplicaFailure"
AS_EXPECTED = "AsExpected"

# Problems found while reconciling (Degraded=True, Warning events)
INVALID_SPEC = "InvalidSpec"
SECRET_NOT_FOUND = "SecretNotFound"  # pods the kubelet cannot start: a Secret (or key) missing
POD_CONFIG_ERROR = "PodConfigError"  # pods the kubelet cannot start for another config reason
APPLY_FAILED = "ApplyFailed"
NAME_CONFLICT = "NameConflict"  # a child's name is held by an object this CR does not control

# The LoRA readiness gate on pods
NO_ADAPTERS = "NoAdapters"
SERVER_NOT_READY = "ServerNotReady"
ADAPTERS_LOADED = "AdaptersLoaded"
ADAPTERS_MISSING = "AdaptersMissing"

# LoraAdapter conditions
INVALID_ADAPTER = "InvalidAdapter"
LOAD_FAILED = "LoadFailed"
NO_SERVING_PODS = "NoServingPods"
LOADING = "Loading"
