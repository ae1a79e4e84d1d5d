"""The ttftSeconds query's edge cases on a real Prometheus (Debian's package), fed by exporter
doubles (named so: fixed metrics texts whose counters grow with time, standing in for servers in
states a test cannot make a real one hold): a server whose prompts wait while nothing gets a
first token reads as a long queue (not +Inf, which KEDA would take for 0); a replica still
loading its model does not dilute the throughput; a server scraped by two monitors counts once;
a prompt's own prefill, which replicas do not shorten, is not steered on; servers older than
the prefill counter are steered on their whole wait."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vllm_operator.model.autoscaling import DEPLOYMENT_SERIES_LABEL, query
from vllm_operator.model.spec import parse_deployment
from vllm_testkit import prometheus
from vllm_testkit.samples import IMAGES, vllmd

pytestmark = pytest.mark.skipif(
    prometheus.available() is None,
    reason="Debian's prometheus package is not installed (make prometheus)",
)

NS, NAME = "models", "m"
OURS = {"namespace": NS, DEPLOYMENT_SERIES_LABEL: NAME}


class ExporterDouble:
    """A /metrics endpoint of a vllm-ext-serve in a given state: tokens waiting `waiting`
    (constant), of which `in_prefill` are in their prefill rather than queued (None: a server
    older than vllm:prefill_token_seconds_total), prompt tokens prefilled at `prefill_rate` a
    second, ready or not."""

    def __init__(
        self, *, waiting: float, prefill_rate: float, ready: bool, in_prefill: float | None = None
    ) -> None:
        self.waiting, self.prefill_rate, self.ready = waiting, prefill_rate, ready
        self.in_prefill = in_prefill
        self.started = time.monotonic()

    def text(self) -> str:
        elapsed = time.monotonic() - self.started
        labels = '{model_name="tiny",engine="0"}'
        prefill = (
            ""
            if self.in_prefill is None
            else f"vllm:prefill_token_seconds_total{labels} {self.in_prefill * elapsed}\n"
        )
        return (
            f"vllm:waiting_token_seconds_total{labels} {self.waiting * elapsed}\n"
            f"vllm:prefilled_tokens_total{labels} {self.prefill_rate * elapsed}\n"
            f"{prefill}"
            f"vllm:num_tokens_waiting{labels} {self.waiting}\n"
            f"vllm:server_ready {1 if self.ready else 0}\n"
        )


@contextmanager
def serving(double: ExporterDouble) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name
            body = double.text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def ttft_query(ttft: float = 1.0) -> str:
    body = vllmd(
        NAME, {"model": {"uri": "/m"}, "autoscaling": {"maxReplicas": 8, "ttftSeconds": ttft}}, NS
    )
    return query(parse_deployment(body, IMAGES))


def evaluate(targets: list[prometheus.Target], tmp_path, promql: str, ready: Callable) -> float:
    """`promql`'s value once every target's counters have a rate (two scrapes each) and the
    value satisfies `ready` (a young series' rate ramps up over the window)."""
    prom = prometheus.Prometheus(targets, tmp_path).start()
    rates = f'rate(vllm:prefilled_tokens_total{{namespace="{NS}"}}[60s])'
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = prom.query(promql)
            scraped = len(prom.query(rates)) == len(targets)
            if scraped and result and ready(float(result[0]["value"][1])):
                return float(result[0]["value"][1])
            time.sleep(0.5)
        raise AssertionError(f"{promql} never settled: {prom.query(promql)}")
    finally:
        prom.stop()


def test_prompts_waiting_with_nothing_prefilled_read_as_a_long_queue(tmp_path):
    """A wedged or saturated server: 5000 tokens waiting, nothing got a first token. Without
    the floor on the throughput the query is +Inf, which KEDA (ignoreNullValues) reports as 0:
    a scale-down at the worst moment."""
    stuck = ExporterDouble(waiting=5000, prefill_rate=0, ready=True)
    with serving(stuck) as address:
        targets = [prometheus.Target(address, {**OURS, "pod": "m-a"})]
        # A young series' rate ramps up over the window (Prometheus extrapolates little): the
        # value grows towards 5000 token-seconds a second over the floor of 1 token a second.
        value = evaluate(targets, tmp_path, ttft_query(), lambda v: v > 8)
    assert math.isfinite(value)
    assert math.ceil(value / 1.0) > 8  # above maxReplicas: the autoscaler goes to the max


def test_a_replica_still_loading_does_not_dilute_the_throughput(tmp_path):
    """Two serving replicas prefilling 1000 tokens/s each with 500 tokens waiting each, and a
    third still loading (not ready, nothing prefilled): the per-replica throughput stays 1000,
    so q = 1000 / 1000 = 1.0 (counting the loading one would make it 1.5, and ask for more
    replicas while the first ones start). The doubles export no prefill counter, as servers
    of an older release: the whole wait counts."""
    a = ExporterDouble(waiting=500, prefill_rate=1000, ready=True)
    b = ExporterDouble(waiting=500, prefill_rate=1000, ready=True)
    loading = ExporterDouble(waiting=0, prefill_rate=0, ready=False)
    with serving(a) as pa, serving(b) as pb, serving(loading) as pl:
        targets = [
            prometheus.Target(pa, {**OURS, "pod": "m-a"}),
            prometheus.Target(pb, {**OURS, "pod": "m-b"}),
            prometheus.Target(pl, {**OURS, "pod": "m-c"}),
        ]
        value = evaluate(targets, tmp_path, ttft_query(), lambda v: abs(v - 1.0) < 0.1)
    assert value == pytest.approx(1.0, rel=0.05)


def test_a_server_scraped_by_two_monitors_counts_once(tmp_path):
    """A ServiceMonitor and a PodMonitor both scraping one pod: two jobs, one pod. The
    raw-signal and ttftSeconds queries take it once."""
    one = ExporterDouble(waiting=300, prefill_rate=600, ready=True)
    raw = vllmd(
        NAME,
        {"model": {"uri": "/m"}, "autoscaling": {"maxReplicas": 8, "tokensWaitingPerReplica": 100}},
        NS,
    )
    with serving(one) as address:
        targets = [
            prometheus.Target(address, {**OURS, "pod": "m-a"}),
            prometheus.Target(address, {**OURS, "pod": "m-a"}),  # the second monitor's job
        ]
        value = evaluate(targets, tmp_path, query(parse_deployment(raw, IMAGES)), lambda v: v > 0)
        assert value == pytest.approx(300)  # not 600


def test_a_prompt_s_own_prefill_longer_than_the_target_does_not_scale_out(tmp_path):
    """Long prompts on a slow model: 1000 tokens waiting on each of two replicas, all of them in
    their prefill, at 1000 tokens/s: each token waits 1 s, none of it queued, and ttftSeconds
    is 0.5. More replicas cannot shorten a prefill; steering on the whole wait asked for twice
    the replicas at every poll (4 here), up to maxReplicas. The target becomes the prefill plus
    a quarter of ttftSeconds: the two replicas are enough."""
    busy = ExporterDouble(waiting=1000, prefill_rate=1000, in_prefill=1000, ready=True)
    with serving(busy) as a, serving(busy) as b:
        targets = [
            prometheus.Target(a, {**OURS, "pod": "m-a"}),
            prometheus.Target(b, {**OURS, "pod": "m-b"}),
        ]
        # 2 x 1.0 s / (1.0 / 0.5 + 0.25)
        value = evaluate(targets, tmp_path, ttft_query(0.5), lambda v: v > 0.8)
    assert value == pytest.approx(2 * 1.0 / 2.25, rel=0.02)
    assert math.ceil(value / 0.5) == 2


def test_the_target_is_ttft_where_the_prefill_leaves_room_and_the_prefill_plus_a_quarter_else(
    tmp_path,
):
    """1500 tokens waiting at 1000 tokens/s on one replica, 500 of them in their prefill: 1.5 s
    of mean wait, 0.5 s of it prefill. For ttftSeconds 1.0 the prefill leaves room: q = 1.5, two
    replicas. For ttftSeconds 0.4 it does not: the target is 0.5 + 0.1 s, q = 1.5 / 1.5 = 1.0,
    three replicas of 0.4 (the whole-wait target asked for four)."""
    one = ExporterDouble(waiting=1500, prefill_rate=1000, in_prefill=500, ready=True)
    with serving(one) as address:
        targets = [prometheus.Target(address, {**OURS, "pod": "m-a"})]
        prom = prometheus.Prometheus(targets, tmp_path).start()
        try:
            deadline, values = time.monotonic() + 30, None
            while time.monotonic() < deadline:
                results = [prom.query(ttft_query(t)) for t in (1.0, 0.4)]
                if all(results):
                    values = [float(r[0]["value"][1]) for r in results]
                    if values[0] == pytest.approx(1.5, rel=0.02):
                        break
                time.sleep(0.5)
        finally:
            prom.stop()
    assert values is not None
    roomy, tight = values
    assert roomy == pytest.approx(1.5, rel=0.02)
    assert math.ceil(roomy / 1.0) == 2
    assert tight == pytest.approx(1.0, rel=0.02)
    assert math.ceil(tight / 0.4) == 3
