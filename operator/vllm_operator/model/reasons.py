"""Condition and event reasons (CamelCase), in one place."""

# VLLMDeployment conditions
MINIMUM_REPLICAS_READY = "MinimumReplicasReady"
NO_REPLICA_READY = "NoReplicaReady"
SCALED_TO_ZERO = "ScaledToZero"
ROLLING_OUT = "RollingOut"
ROLLOUT_COMPLETE = "RolloutComplete"
LOADING_MODEL = "LoadingModel"  # replicas starting: their servers' phases in the message
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
REPLICA_FAILURE = "ReplicaFailure"
AS_EXPECTED = "AsExpected"

# The InferencePoolCreated condition (present while spec.inferencePool asks for a pool; False is
# no Degraded: the model serves through its Service all the same)
INFERENCE_POOL_CREATED = "Created"
CRD_NOT_INSTALLED = "CRDNotInstalled"  # the Gateway API Inference Extension's CRDs are missing
# and, when the pool is not in place: NAME_CONFLICT, APPLY_FAILED below

# The AutoscalerCreated condition (present while spec.autoscaling asks for one): which object
# scales the replicas, or why none does
KEDA_SCALED_OBJECT = "KEDAScaledObject"  # KEDA's CRDs are installed
HORIZONTAL_POD_AUTOSCALER = "HorizontalPodAutoscaler"  # no KEDA: an external metric
PROMETHEUS_ADDRESS_MISSING = "PrometheusAddressMissing"  # KEDA's trigger needs one
# and, when the object is not in place: NAME_CONFLICT, APPLY_FAILED below

# Problems found while reconciling (Degraded=True, Warning events)
INVALID_SPEC = "InvalidSpec"
SECRET_NOT_FOUND = "SecretNotFound"  # pods the kubelet cannot start: a Secret (or key) missing
POD_CONFIG_ERROR = "PodConfigError"  # pods the kubelet cannot start for another config reason
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"  # pods whose image cannot be pulled
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"  # servers that keep exiting
GROUP_RESTARTED = "GroupRestarted"  # a multi-node group recreated after a pod of it failed
UNSCHEDULABLE = "Unschedulable"  # pods no node fits (the scheduler's words in the message)
SERVER_FAILED = "ServerFailed"  # a server that says it died while starting
STARTUP_TIMEOUT = "StartupTimeout"  # a server starting for longer than spec.startupTimeout
APPLY_FAILED = "ApplyFailed"
NAME_CONFLICT = "NameConflict"  # a child's name is held by an object this CR does not control
LEADER_WORKER_SET_MISSING = "LeaderWorkerSetMissing"  # multi-node replicas without LWS's CRD

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
