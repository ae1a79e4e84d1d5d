"""TokenLoad bookkeeping: every request event moves the totals by exactly its tokens; the prefill
rate is prefilled tokens per busy second, smoothed over busy time (a fake clock, no sleeps)."""

import math
import random

import pytest

from vllm_server_ext.token_load import PREFILL_RATE_TAU, TokenLoad


def test_request_lifecycle():
    load = TokenLoad()
    load.added("a", 10)
    load.added("b", 7)
    assert (load.waiting, load.running) == (17, 0)
    load.generated("a", 1)  # first token: a moves from waiting to running
    assert (load.waiting, load.running) == (7, 11)
    load.generated("a", 3)
    assert (load.waiting, load.running) == (7, 14)
    load.finished("a")
    assert (load.waiting, load.running) == (7, 0)
    load.finished("b")  # aborted before its first token
    assert (load.waiting, load.running) == (0, 0)
    assert len(load) == 0


def test_unknown_duplicate_and_repeated_events_are_ignored():
    load = TokenLoad()
    load.generated("ghost", 5)
    load.finished("ghost")
    load.added("a", 4)
    load.added("a", 4)  # streaming-input update of a known request
    load.finished("a")
    load.finished("a")  # abort after finish (parent and child abort paths)
    assert (load.waiting, load.running, len(load)) == (0, 0, 0)


def test_random_interleavings_match_a_full_recount():
    rng = random.Random(7)
    load = TokenLoad()
    live: dict[str, list[int]] = {}  # id -> [prompt, generated]
    for step in range(5000):
        action = rng.random()
        if action < 0.3 or not live:
            rid = f"r{step}"
            live[rid] = [rng.randint(1, 500), 0]
            load.added(rid, live[rid][0])
        elif action < 0.85:
            rid = rng.choice(list(live))
            n = rng.randint(1, 4)
            live[rid][1] += n
            load.generated(rid, n)
        else:
            rid = rng.choice(list(live))
            del live[rid]
            load.finished(rid)
        assert load.waiting == sum(p for p, g in live.values() if g == 0)
        assert load.running == sum(p + g for p, g in live.values() if g > 0)


def test_the_collector_exposes_the_gauges_with_vllms_labels_at_scrape_time():
    from prometheus_client import CollectorRegistry, generate_latest

    from vllm_server_ext.token_load import TokenLoadCollector

    clock = FakeClock()
    load = TokenLoad(clock=clock)
    registry = CollectorRegistry()
    registry.register(TokenLoadCollector(load, model_name="tiny", engine="1"))
    load.added("a", 10)
    load.added("b", 5)
    clock.advance(0.5)
    load.generated("a", 2)  # 10 tokens prefilled in 0.5 busy seconds
    assert generate_latest(registry).decode().splitlines() == [
        "# HELP vllm:num_tokens_running Prompt plus generated tokens of requests that have produced output.",
        "# TYPE vllm:num_tokens_running gauge",
        'vllm:num_tokens_running{engine="1",model_name="tiny"} 12.0',
        "# HELP vllm:num_tokens_waiting Prompt tokens of requests queued or in prefill (no output token yet).",
        "# TYPE vllm:num_tokens_waiting gauge",
        'vllm:num_tokens_waiting{engine="1",model_name="tiny"} 5.0',
        "# HELP vllm:prefill_tokens_per_second Measured prefill throughput: prompt tokens that got"
        " their first output token per second during which tokens were waiting, smoothed over a"
        " minute of such time.",
        "# TYPE vllm:prefill_tokens_per_second gauge",
        'vllm:prefill_tokens_per_second{engine="1",model_name="tiny"} 20.0',
    ]
    load.finished("a")  # read on the next scrape, no update of its own
    assert (
        'vllm:num_tokens_running{engine="1",model_name="tiny"} 0.0'
        in generate_latest(registry).decode().splitlines()
    )


def test_the_collector_labels_engine_0_by_default():
    from vllm_server_ext.token_load import TokenLoadCollector

    clock = FakeClock()
    load = TokenLoad(clock=clock)
    prefill(load, clock, "a", 10, 0.5)
    (running, waiting, rate) = TokenLoadCollector(load, model_name="tiny").collect()
    for family in (running, waiting, rate):
        assert [s.labels for s in family.samples] == [{"model_name": "tiny", "engine": "0"}]
    assert rate.samples[0].value == 20.0


# --- prefill rate -----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def prefill(load: TokenLoad, clock: FakeClock, rid: str, prompt: int, seconds: float) -> None:
    """One request alone on the engine: arrives, gets its first token `seconds` later."""
    load.added(rid, prompt)
    clock.advance(seconds)
    load.generated(rid, 1)


def test_the_rate_is_absent_before_the_first_prefilled_token():
    from vllm_server_ext.token_load import TokenLoadCollector

    clock = FakeClock()
    load = TokenLoad(clock=clock)
    collector = TokenLoadCollector(load, model_name="tiny")
    assert load.prefill_rate() is None
    load.added("a", 100)
    clock.advance(0.3)
    assert load.prefill_rate() is None  # busy, but nothing prefilled yet
    *_, rate = collector.collect()
    assert rate.name == "vllm:prefill_tokens_per_second"
    assert rate.samples == []  # an absent series: a PromQL division by it is empty, not +Inf
    clock.advance(0.2)
    load.generated("a", 1)
    assert load.prefill_rate() == 200.0  # the first sample covers all the busy time so far


def test_steady_load_gives_prefilled_tokens_per_busy_second():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    for i in range(10):  # ten queued requests, one prefilled every 0.1 s: 1000 tokens/s
        load.added(f"r{i}", 100)
    for i in range(10):
        clock.advance(0.1)
        load.generated(f"r{i}", 1)
        assert load.busy_seconds() == pytest.approx(0.1 * (i + 1))
    assert load.prefilled == 1000
    assert load.prefill_rate() == pytest.approx(1000.0)


def test_idle_gaps_do_not_dilute_the_rate():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    for i in range(30):  # a request every 10 s, each prefilled in 0.5 s, read every second
        prefill(load, clock, f"r{i}", 100, 0.5)
        for _ in range(9):
            clock.advance(1.0)
            load.prefill_rate()
        clock.advance(0.5)
        load.finished(f"r{i}")
    assert load.busy_seconds() == pytest.approx(15.0)
    assert load.prefill_rate() == pytest.approx(200.0)  # prompt / 0.5 s, not prompt / 10 s


def test_an_abort_adds_busy_time_but_no_tokens():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    load.added("aborted", 100)
    clock.advance(1.0)
    load.finished("aborted")  # no first token
    assert (load.busy_seconds(), load.prefilled) == (1.0, 0)
    assert load.prefill_rate() is None
    clock.advance(5.0)  # idle
    prefill(load, clock, "b", 100, 1.0)
    assert load.prefill_rate() == pytest.approx(50.0)  # 100 tokens over 2 busy seconds


def test_busy_time_includes_the_open_period_and_zero_token_prompts_open_none():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    load.added("empty", 0)
    clock.advance(1.0)
    assert load.busy_seconds() == 0.0
    load.added("a", 10)
    clock.advance(2.0)
    load.added("b", 10)  # already busy: the period goes on
    clock.advance(1.5)
    assert load.busy_seconds() == 3.5  # open period, counted up to now
    load.generated("a", 1)
    clock.advance(1.0)
    load.generated("b", 1)
    clock.advance(7.0)
    assert load.busy_seconds() == 4.5  # closed when the last waiting request got its token


def test_a_read_without_new_busy_time_leaves_the_rate_unchanged():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    prefill(load, clock, "a", 100, 0.5)
    assert load.prefill_rate() == 200.0
    clock.advance(100.0)  # idle
    assert load.prefill_rate() == 200.0
    assert load.prefill_rate() == 200.0


def test_smoothing_weighs_samples_by_busy_time():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    prefill(load, clock, "a", 100, 1.0)  # 1 busy second at 100 tokens/s
    assert load.prefill_rate() == 100.0
    prefill(load, clock, "b", 600, 3.0)  # 3 busy seconds at 200 tokens/s
    # Early on (little busy time against tau) the value is nearly the busy-weighted mean, not
    # dominated by the first sample.
    d1, d2 = math.exp(-1.0 / PREFILL_RATE_TAU), math.exp(-3.0 / PREFILL_RATE_TAU)
    expected = (d2 * (1 - d1) * 100 + (1 - d2) * 200) / (1 - d1 * d2)
    assert load.prefill_rate() == pytest.approx(expected)
    assert load.prefill_rate() == pytest.approx(175.0, rel=0.01)


def test_smoothing_follows_a_change_with_time_constant_tau_of_busy_time():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    for i in range(600):  # ten busy minutes at 1000 tokens/s
        prefill(load, clock, f"a{i}", 1000, 1.0)
        load.prefill_rate()
    assert load.prefill_rate() == pytest.approx(1000.0)
    for i in range(60):  # one busy tau at 2000 tokens/s, read every request
        prefill(load, clock, f"b{i}", 2000, 1.0)
        load.prefill_rate()
    assert load.prefill_rate() == pytest.approx(2000 - 1000 * math.exp(-1), rel=1e-3)
    for i in range(600):
        prefill(load, clock, f"c{i}", 2000, 1.0)
    assert load.prefill_rate() == pytest.approx(2000.0, rel=1e-3)  # one read after ten taus


def _replay(read_every: float, seconds: float) -> TokenLoad:
    """A steady but lumpy load (prompts of 100, 300 and 200 tokens arriving every 1.3 s, each
    prefilled at 800 tokens/s, sometimes queued behind the previous one), read every
    `read_every` seconds."""
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    events = []  # (time, kind, id, prompt)
    engine_free = 0.0
    for i in range(int(seconds / 1.3)):
        arrival, prompt = i * 1.3, (100, 300, 200)[i % 3] * (1 + (i % 7 == 0) * 4)
        first_token = max(arrival, engine_free) + prompt / 800
        engine_free = first_token
        events += [(arrival, 0, f"r{i}", prompt), (first_token, 1, f"r{i}", prompt)]
        events.append((first_token + 0.4, 2, f"r{i}", prompt))
    events += [(k * read_every, 3, "", 0) for k in range(1, int(seconds / read_every))]
    start = clock.now
    for at, kind, rid, prompt in sorted(events):
        clock.now = start + at
        if kind == 0:
            load.added(rid, prompt)
        elif kind == 1:
            load.generated(rid, 1)
        elif kind == 2:
            load.finished(rid)
        else:
            load.prefill_rate()
    return load


def test_reading_often_or_rarely_converges_to_the_same_value():
    often = _replay(read_every=0.05, seconds=1500)  # several scrapers, one every 50 ms
    rarely = _replay(read_every=30.0, seconds=1500)  # one scraper every 30 s
    assert often.busy_seconds() == pytest.approx(rarely.busy_seconds())
    assert often.prefill_rate() == pytest.approx(800.0, rel=0.02)
    assert rarely.prefill_rate() == pytest.approx(800.0, rel=0.02)
    assert often.prefill_rate() == pytest.approx(rarely.prefill_rate(), rel=0.02)


def test_the_state_is_o1_no_per_request_history():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    for i in range(10_000):
        prefill(load, clock, f"r{i}", 50, 0.01)
        load.generated(f"r{i}", 3)
        load.finished(f"r{i}")
        if i % 100 == 0:
            load.prefill_rate()
    assert not hasattr(load, "__dict__")
    assert len(load) == 0 and load._requests == {}
    for name in TokenLoad.__slots__:
        if name not in ("_requests", "_clock", "_read_lock"):
            value = getattr(load, name)
            assert value is None or type(value) in (int, float), name
