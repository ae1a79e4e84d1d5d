"""spec.autoscaling as the object an autoscaler acts on: a KEDA ScaledObject (Prometheus
trigger) where KEDA's CRDs are installed, else an autoscaling/v2 HorizontalPodAutoscaler on an
external metric (a Prometheus adapter serves it). Both target the VLLMDeployment's scale
subresource, so the autoscaler owns spec.replicas and the operator follows it.

Every target is one signal `q` summed over the replicas and a value `t` per replica, so that
replicas = ceil(q / t), as KEDA's AverageValue triggers and HPA's AverageValue external metrics
compute it:

| target | q | t |
| --- | --- | --- |
| ttftSeconds | prompt tokens waiting / prefill throughput per replica (see below) | ttft |
| tokensWaitingPerReplica | sum(vllm:num_tokens_waiting) | tokens |
| kvCacheUsage | sum(vllm:kv_cache_usage_perc) | fraction |
| requestsWaitingPerReplica | sum(vllm:num_requests_waiting) | requests |

(each server's series taken once, see `query`).

For ttftSeconds, from the servers' counters over one window (`window`): the prompt tokens
waiting on average (rate(vllm:waiting_token_seconds_total), the integral of
vllm:num_tokens_waiting) over the prefill throughput per ready replica
(rate(vllm:prefilled_tokens_total), averaged, at least a token a second). By Little's law,
sum(waiting) / sum(throughput) is the mean time a prompt token waited for its first output
token, `T`, so q = N x T and replicas = ceil(N x T / ttft): a proportional controller that
settles where the mean time to first token is ttftSeconds, with no hand-tuned constant.

The wait includes a prompt's own prefill, `p` (rate(vllm:prefill_token_seconds_total): tokens
x vLLM's prefill interval, over the same throughput), which more replicas do not shorten. Where
it alone takes more than ttft x (1 - MIN_QUEUE_SHARE), no number of replicas meets ttftSeconds,
and steering on it would add replicas up to maxReplicas for nothing: the target becomes
p + ttft x MIN_QUEUE_SHARE instead (q is divided by max(1, p / ttft + MIN_QUEUE_SHARE)), which
leaves a quarter of ttftSeconds to queueing. (Steering on the queueing alone, N x queued /
(ttft - p), was tried and dropped: with no queue it asks for no replica at all, and
bench/autoscale.py showed it scaling down too far and missing more.) bench/autoscale.py
compares the policies.
"""

from __future__ import annotations

from typing import Any

from .. import API_VERSION
from .builders import DEPLOYMENT_LABEL, child_metadata
from .spec import Autoscaling, DeploymentSpec, InvalidSpec, duration_seconds

KEDA_API_VERSION = "keda.sh/v1alpha1"
KEDA_HTTP_API_VERSION = "http.keda.sh/v1beta1"  # the HTTP add-on's InterceptorRoute (v0.14+)
# The HTTP add-on's external scaler, as its Helm chart installs it (namespace keda).
KEDA_HTTP_SCALER = "keda-add-ons-http-external-scaler.keda:9090"
HPA_API_VERSION = "autoscaling/v2"
# The label Prometheus gives the pods' DEPLOYMENT_LABEL (podTargetLabels of the operator's
# monitors; Prometheus turns every character but letters, digits and _ into _).
DEPLOYMENT_SERIES_LABEL = "".join(c if c.isalnum() else "_" for c in DEPLOYMENT_LABEL)
# The share of ttftSeconds the ttftSeconds query leaves to queueing at least (see the module).
MIN_QUEUE_SHARE = 0.25
# How often KEDA evaluates the query (seconds).
POLLING_INTERVAL = 15
# The external metric each target is, for HPA (a Prometheus adapter's rule computes `query`
# under this name; see the README).
EXTERNAL_METRICS = {
    "ttftSeconds": "vllm_queued_prefill_seconds",
    "tokensWaitingPerReplica": "vllm_num_tokens_waiting",
    "kvCacheUsage": "vllm_kv_cache_usage_perc",
    "requestsWaitingPerReplica": "vllm_num_requests_waiting",
}


def series_selector(spec: DeploymentSpec) -> str:
    """The PromQL label matchers of this VLLMDeployment's servers."""
    return f'{{namespace="{spec.namespace}",{DEPLOYMENT_SERIES_LABEL}="{spec.name}"}}'


def window(spec: DeploymentSpec) -> str:
    """The range of the ttftSeconds query's rates: a minute, or four scrapes where the
    monitors scrape less often (a rate needs two samples, four smooth it). An interval in
    another form than hours, minutes and seconds (500ms) is below 15 s: a minute."""
    try:
        scrape = duration_seconds(spec.monitoring.interval)
    except InvalidSpec:
        scrape = 0
    return f"{max(60, 4 * scrape)}s"


def query(spec: DeploymentSpec) -> str:
    """The PromQL of `q` (see the module's table) for this VLLMDeployment. Each series is
    taken once per server (`max by (pod, engine)`: a ServiceMonitor and a PodMonitor both
    scraping it must not count it twice), and the ttftSeconds throughput only from servers that
    are ready (a replica still loading its model serves nothing yet; counting it would lower
    the average and ask for still more replicas while the first ones start)."""
    scaling = _scaling(spec)
    s = series_selector(spec)
    if scaling.target == "ttftSeconds":
        w = window(spec)

        def rate(counter: str) -> str:
            return f"max by (pod, engine) (rate({counter}{s}[{w}]))"

        ready = f"max by (pod) (vllm:server_ready{s}) == 1"
        waited = f"sum({rate('vllm:waiting_token_seconds_total')})"
        # Servers older than the counter count no prefill: the target stays ttftSeconds.
        prefill = f"(sum({rate('vllm:prefill_token_seconds_total')}) or vector(0))"
        prefilled = f"({rate('vllm:prefilled_tokens_total')} and on (pod) ({ready}))"
        # At least a token a second: tokens waiting while nothing got its first token in the
        # window (a wedged or saturated server) must read as a huge queue, not as +Inf, which
        # KEDA (ignoreNullValues) would take for 0.
        total = f"{waited} / clamp_min(avg({prefilled}), 1)"
        prefill_share = f"{prefill} / clamp_min(sum({prefilled}), 1) / {threshold(spec)}"
        return f"({total}) / clamp_min({prefill_share} + {MIN_QUEUE_SHARE}, 1)"
    metric = {
        "tokensWaitingPerReplica": "vllm:num_tokens_waiting",
        "kvCacheUsage": "vllm:kv_cache_usage_perc",
        "requestsWaitingPerReplica": "vllm:num_requests_waiting",
    }[scaling.target]
    return f"sum(max by (pod, engine) ({metric}{s}))"


def threshold(spec: DeploymentSpec) -> str:
    """`t` as KEDA's trigger metadata takes it (a decimal string)."""
    value = _scaling(spec).value
    return str(int(value)) if value.is_integer() else repr(value)


def quantity(value: float) -> str:
    """`value` as a Kubernetes quantity (HPA's averageValue): whole, or in thousandths."""
    if value.is_integer():
        return str(int(value))
    return f"{max(1, round(value * 1000))}m"


def _scale_target(spec: DeploymentSpec) -> dict[str, str]:
    return {"apiVersion": API_VERSION, "kind": "VLLMDeployment", "name": spec.name}


def _behavior(spec: DeploymentSpec) -> dict[str, Any]:
    seconds = _scaling(spec).scale_down_stabilization_seconds
    return {"scaleDown": {"stabilizationWindowSeconds": seconds}}


def scales_to_zero(spec: DeploymentSpec, *, requests_held: bool) -> bool:
    """Whether the ScaledObject may take the model to zero: asked for (minReplicas 0), and
    something holds requests meanwhile (`requests_held`: KEDA's HTTP add-on is installed).
    Otherwise one replica stays: at zero, requests would fail and nothing would report load."""
    return _scaling(spec).min_replicas == 0 and requests_held


def build_scaled_object(spec: DeploymentSpec, *, requests_held: bool = False) -> dict[str, Any]:
    """KEDA's ScaledObject: a Prometheus trigger on `query`, AverageValue `threshold`; KEDA
    makes and owns the HPA underneath. To zero only where the HTTP add-on holds requests
    (`scales_to_zero`): then the requests it holds (an external-push trigger on this model's
    InterceptorRoute) wake the model, and count towards more replicas beyond
    scaleFromZero.concurrencyPerReplica each."""
    scaling = _scaling(spec)
    if scaling.prometheus_address is None:
        raise ValueError(f"{spec.name}: KEDA's Prometheus trigger needs prometheus.address")
    zero = scales_to_zero(spec, requests_held=requests_held)
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": "vllm",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": scaling.prometheus_address,
                "query": query(spec),
                "threshold": threshold(spec),
                "activationThreshold": "0",
                # No series yet (no replica, or none measured): 0, not an error.
                "ignoreNullValues": "true",
            },
        }
    ]
    if zero:
        triggers.append(
            {
                "type": "external-push",
                "name": "held-requests",
                "metadata": {"scalerAddress": KEDA_HTTP_SCALER, "interceptorRoute": spec.name},
            }
        )
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": child_metadata(spec, spec.name),
        "spec": {
            "scaleTargetRef": _scale_target(spec),
            "minReplicaCount": scaling.min_replicas if zero else max(1, scaling.min_replicas),
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": POLLING_INTERVAL,
            # Only for the last replica's way to zero; above it, the HPA's behaviour decides.
            "cooldownPeriod": scaling.scale_down_stabilization_seconds,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(spec)}},
            "triggers": triggers,
        },
    }


def build_interceptor_route(spec: DeploymentSpec) -> dict[str, Any]:
    """KEDA's HTTP add-on's InterceptorRoute: requests for scaleFromZero.hosts go through the
    interceptor to this model's Service (its API port), held up to coldStartTimeout while no
    replica is ready. The response-header wait is off: a completion that is not streamed sends
    its headers only once it is done."""
    zero = _scaling(spec).scale_from_zero
    return {
        "apiVersion": KEDA_HTTP_API_VERSION,
        "kind": "InterceptorRoute",
        "metadata": child_metadata(spec, spec.name),
        "spec": {
            "target": {"service": spec.name, "port": spec.port},
            "rules": [{"hosts": list(zero.hosts)}],
            "scalingMetric": {"concurrency": {"targetValue": zero.concurrency_per_replica}},
            "timeouts": {"readiness": zero.cold_start_timeout, "responseHeader": "0s"},
        },
    }


def build_hpa(spec: DeploymentSpec) -> dict[str, Any]:
    """An autoscaling/v2 HorizontalPodAutoscaler on the external metric of the target (served
    by a Prometheus adapter), AverageValue `t`. HPA keeps at least one replica (scaling to zero
    needs KEDA)."""
    scaling = _scaling(spec)
    selector = {"namespace": spec.namespace, DEPLOYMENT_SERIES_LABEL: spec.name}
    metric = {"name": EXTERNAL_METRICS[scaling.target], "selector": {"matchLabels": selector}}
    return {
        "apiVersion": HPA_API_VERSION,
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(spec, spec.name),
        "spec": {
            "scaleTargetRef": _scale_target(spec),
            "minReplicas": max(1, scaling.min_replicas),
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": metric,
                        "target": {"type": "AverageValue", "averageValue": quantity(scaling.value)},
                    },
                }
            ],
            "behavior": _behavior(spec),
        },
    }


def _scaling(spec: DeploymentSpec) -> Autoscaling:
    if spec.autoscaling is None:
        raise ValueError(f"{spec.name} asks for no autoscaling")
    return spec.autoscaling
