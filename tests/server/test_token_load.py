"""TokenLoad bookkeeping: every request event moves the totals by exactly its tokens; the prefill
rate is prefilled tokens per measured second (wall time, idle stretches capped at IDLE_CAP),
smoothed over measured time (a fake clock, no sleeps)."""

import math
import random

import pytest

from vllm_server_ext.token_load import IDLE_CAP, PREFILL_RATE_TAU, TokenLoad


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
    load.generated("a", 2, 0.25)  # 10 tokens prefilled in 0.5 measured seconds
    assert generate_latest(registry).decode().splitlines() == [
        "# HELP vllm:num_tokens_running Prompt plus generated tokens of requests that have produced output.",
        "# TYPE vllm:num_tokens_running gauge",
        'vllm:num_tokens_running{engine="1",model_name="tiny"} 12.0',
        "# HELP vllm:num_tokens_waiting Prompt tokens of requests queued or in prefill (no output token yet).",
        "# TYPE vllm:num_tokens_waiting gauge",
        'vllm:num_tokens_waiting{engine="1",model_name="tiny"} 5.0',
        "# HELP vllm:prefill_tokens_per_second Measured prefill throughput: prompt tokens that got"
        " their first output token per second (idle stretches count at most 10 s), smoothed over a"
        " minute.",
        "# TYPE vllm:prefill_tokens_per_second gauge",
        'vllm:prefill_tokens_per_second{engine="1",model_name="tiny"} 20.0',
        "# HELP vllm:prefilled_tokens_total Prompt tokens of requests that got their first output"
        " token.",
        "# TYPE vllm:prefilled_tokens_total counter",
        'vllm:prefilled_tokens_total{engine="1",model_name="tiny"} 10.0',
        "# HELP vllm:waiting_token_seconds_total The time integral of vllm:num_tokens_waiting"
        " (token-seconds): its rate is the average number of prompt tokens waiting.",
        "# TYPE vllm:waiting_token_seconds_total counter",
        'vllm:waiting_token_seconds_total{engine="1",model_name="tiny"} 7.5',  # 15 x 0.5
        "# HELP vllm:prefill_token_seconds_total Prompt tokens times their prefill interval (first"
        " scheduled to first token), added at each first token: the part of"
        " vllm:waiting_token_seconds_total that is not queueing.",
        "# TYPE vllm:prefill_token_seconds_total counter",
        'vllm:prefill_token_seconds_total{engine="1",model_name="tiny"} 2.5',  # 10 x 0.25
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
    families = list(TokenLoadCollector(load, model_name="tiny").collect())
    rate = families[2]
    for family in families:
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


def ewma(rate: float, sample: float, seconds: float, measured_so_far: float) -> float:
    """One fold of the average by hand: `seconds` of measured time at `sample` tokens/s, after
    `measured_so_far` seconds already folded in (the bias correction)."""
    decay = math.exp(-seconds / PREFILL_RATE_TAU)
    weight = 1.0 - math.exp(-(measured_so_far + seconds) / PREFILL_RATE_TAU)
    return rate + (1.0 - decay) / weight * (sample - rate)


def test_the_rate_is_absent_before_the_first_prefilled_token():
    from vllm_server_ext.token_load import TokenLoadCollector

    clock = FakeClock()
    load = TokenLoad(clock=clock)
    collector = TokenLoadCollector(load, model_name="tiny")
    assert load.prefill_rate() is None
    clock.advance(4.0)  # the server starts idle; 4 s count
    load.added("a", 100)
    clock.advance(0.3)
    assert load.prefill_rate() is None  # a request waits, nothing prefilled yet
    (rate,) = [f for f in collector.collect() if f.name == "vllm:prefill_tokens_per_second"]
    assert rate.samples == []  # an absent series: a PromQL division by it is empty, not +Inf
    clock.advance(0.2)
    load.generated("a", 1)
    # The first sample covers all the measured time so far, the idle start included.
    assert load.prefill_rate() == pytest.approx(100 / 4.5)


def test_steady_load_gives_prefilled_tokens_per_wall_second():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    for i in range(3000):  # ten minutes: a request every 0.2 s, prefilled in 0.1 s
        prefill(load, clock, f"r{i}", 100, 0.1)
        clock.advance(0.05)
        load.finished(f"r{i}")
        clock.advance(0.05)  # idle between requests: wall time, it counts
        load.prefill_rate()
    assert load.measured_seconds() == pytest.approx(600.0)
    assert load.prefill_rate() == pytest.approx(500.0, rel=0.005)  # not 1000 per busy second


def test_sparse_traffic_counts_the_gaps_under_the_cap():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    for i in range(200):  # a request every 5 s, prefilled in 0.5 s, read every second
        prefill(load, clock, f"r{i}", 100, 0.5)
        clock.advance(0.5)
        load.finished(f"r{i}")
        for _ in range(4):
            clock.advance(1.0)
            load.prefill_rate()
    assert load.measured_seconds() == pytest.approx(1000.0)  # 4 s gaps count in full
    # prompt / 5 s, not prompt / 0.5 s (a sawtooth of +-100/tau around it)
    assert load.prefill_rate() == pytest.approx(20.0, rel=0.05)


def test_a_long_silence_does_not_decay_the_rate():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    for i in range(600):  # ten minutes at 100 tokens/s
        clock.advance(0.5)  # idle
        prefill(load, clock, f"r{i}", 100, 0.5)
        load.finished(f"r{i}")
        load.prefill_rate()
    before, measured = load.prefill_rate(), load.measured_seconds()
    assert before == pytest.approx(100.0, rel=0.01)
    clock.advance(3600.0)  # an hour without a request
    assert load.measured_seconds() == pytest.approx(measured + IDLE_CAP)
    after_silence = load.prefill_rate()
    # Decayed by the 10 s the cap lets count, not by an hour (exp(-60) of it would be left).
    assert after_silence == pytest.approx(ewma(before, 0.0, IDLE_CAP, measured), rel=1e-9)
    assert after_silence > 0.8 * before
    prefill(load, clock, "late", 100, 0.5)  # the first request afterwards
    after_request = load.prefill_rate()
    expected = ewma(after_silence, 100 / 0.5, 0.5, measured + IDLE_CAP)
    assert after_request == pytest.approx(expected, rel=1e-9)
    assert after_request > after_silence  # no collapse: its prefill is not spread over an hour


def test_an_idle_stretch_open_at_read_time_counts_at_most_the_cap():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    prefill(load, clock, "a", 100, 0.5)
    assert load.prefill_rate() == 200.0
    load.finished("a")  # idle from here
    clock.advance(4.0)
    assert load.measured_seconds() == pytest.approx(4.5)
    rate = load.prefill_rate()
    assert rate == pytest.approx(ewma(200.0, 0.0, 4.0, 0.5))
    clock.advance(26.0)  # 30 s into the stretch: the read counts 10 of them
    assert load.measured_seconds() == pytest.approx(10.5)
    rate = load.prefill_rate()
    assert rate == pytest.approx(ewma(ewma(200.0, 0.0, 4.0, 0.5), 0.0, 6.0, 4.5))
    clock.advance(1000.0)  # no new measured time: reads leave the rate unchanged
    assert load.measured_seconds() == pytest.approx(10.5)
    assert load.prefill_rate() == rate
    assert load.prefill_rate() == rate
    prefill(load, clock, "b", 100, 0.5)  # the stretch closes with its 10 s
    assert load.measured_seconds() == pytest.approx(11.0)


def test_any_request_ends_an_idle_stretch_and_output_never_changes_it():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    clock.advance(3.0)  # idle since construction, under the cap
    assert load.measured_seconds() == pytest.approx(3.0)
    load.added("empty", 0)  # a zero-token prompt is a request in the server all the same
    clock.advance(20.0)
    assert load.measured_seconds() == pytest.approx(23.0)
    load.added("a", 10)
    load.generated("empty", 1)
    load.generated("a", 1)  # nothing waits, but requests are running: not idle
    clock.advance(15.0)
    assert load.measured_seconds() == pytest.approx(38.0)
    load.finished("a")
    clock.advance(15.0)  # "empty" is still in the server
    assert load.measured_seconds() == pytest.approx(53.0)
    load.finished("empty")
    load.finished("empty")  # a repeated finish of an empty server: the stretch stays open
    clock.advance(25.0)
    assert load.measured_seconds() == pytest.approx(63.0)
    load.added("b", 5)
    load.added("b", 5)  # a known id does not touch the stretch
    clock.advance(2.0)
    assert load.measured_seconds() == pytest.approx(65.0)
    assert load.measured_seconds(now=clock.now + 1.0) == pytest.approx(66.0)


def test_an_abort_adds_measured_time_but_no_tokens():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    load.added("aborted", 100)
    clock.advance(1.0)
    load.finished("aborted")  # no first token
    assert (load.measured_seconds(), load.prefilled) == (1.0, 0)
    assert load.prefill_rate() is None
    clock.advance(5.0)  # idle, under the cap
    prefill(load, clock, "b", 100, 1.0)
    assert load.prefill_rate() == pytest.approx(100 / 7.0)  # 100 tokens over 7 measured seconds


def test_smoothing_weighs_samples_by_measured_time():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    prefill(load, clock, "a", 100, 1.0)  # 1 measured second at 100 tokens/s
    assert load.prefill_rate() == 100.0
    load.finished("a")
    clock.advance(2.0)  # idle, under the cap
    prefill(load, clock, "b", 600, 3.0)  # 5 measured seconds at 120 tokens/s
    # Early on (little measured time against tau) the value is nearly the time-weighted mean,
    # not dominated by the first sample.
    d1, d2 = math.exp(-1.0 / PREFILL_RATE_TAU), math.exp(-5.0 / PREFILL_RATE_TAU)
    expected = (d2 * (1 - d1) * 100 + (1 - d2) * 120) / (1 - d1 * d2)
    assert load.prefill_rate() == pytest.approx(expected)
    assert load.prefill_rate() == pytest.approx((100 + 5 * 120) / 6, rel=0.01)


def test_smoothing_follows_a_change_with_time_constant_tau_of_measured_time():
    clock = FakeClock()
    load = TokenLoad(clock=clock)

    def serve(rid: str, prompt: int) -> None:  # prefilled in 1 s, then decoded for 1 s
        prefill(load, clock, rid, prompt, 1.0)
        clock.advance(1.0)
        load.finished(rid)

    for i in range(300):  # ten minutes at 500 tokens/s
        serve(f"a{i}", 1000)
        load.prefill_rate()
    assert load.prefill_rate() == pytest.approx(500.0)
    for i in range(30):  # one tau at 1000 tokens/s, read every request
        serve(f"b{i}", 2000)
        load.prefill_rate()
    assert load.prefill_rate() == pytest.approx(1000 - 500 * math.exp(-1), rel=1e-3)
    for i in range(300):
        serve(f"c{i}", 2000)
    assert load.prefill_rate() == pytest.approx(1000.0, rel=1e-3)  # one read after ten taus


def _replay(read_every: float, seconds: float) -> TokenLoad:
    """A steady but lumpy load (prompts of 100, 300 and 200 tokens, five times as long every
    seventh, arriving every 1.3 s, each prefilled at 800 tokens/s, sometimes queued behind the
    previous one, and a minute of silence every five minutes), read every `read_every` seconds."""
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    events = []  # (time, kind, id, prompt)
    engine_free = 0.0
    for i in range(int(seconds / 1.3)):
        arrival, prompt = i * 1.3, (100, 300, 200)[i % 3] * (1 + (i % 7 == 0) * 4)
        if arrival % 300 >= 240:
            continue
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
    assert often.measured_seconds() == pytest.approx(rarely.measured_seconds())
    # 1500 s less five silences of about a minute counted as 10 s each
    assert often.measured_seconds() == pytest.approx(1250.0, abs=5.0)
    # The tokens of the minutes before the last silence over their wall time (6600 tokens every
    # 21 arrivals of 1.3 s), not over the time the engine was busy (800 tokens/s), then decayed
    # by the 10 s of that silence that count.
    wall_rate = 6600 / 21 / 1.3 * math.exp(-IDLE_CAP / PREFILL_RATE_TAU)
    assert often.prefill_rate() == pytest.approx(wall_rate, rel=0.1)
    assert often.prefill_rate() == pytest.approx(rarely.prefill_rate(), rel=0.02)


def test_the_state_is_o1_no_per_request_history():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    for i in range(10_000):
        prefill(load, clock, f"r{i}", 50, 0.01)
        load.generated(f"r{i}", 3)
        load.finished(f"r{i}")
        clock.advance(3600.0 if i % 1000 == 999 else 0.0)  # ten idle hours in between
        if i % 100 == 0:
            load.prefill_rate()
    assert not hasattr(load, "__dict__")
    assert len(load) == 0 and load._requests == {}
    assert load.measured_seconds() == pytest.approx(10_000 * 0.01 + 10 * IDLE_CAP)
    for name in TokenLoad.__slots__:
        if name not in ("_requests", "_clock", "_read_lock"):
            value = getattr(load, name)
            values = value if isinstance(value, tuple) else (value,)  # _waited: three numbers
            assert all(v is None or type(v) in (int, float) for v in values), name


# --- the waiting integral: Little's law -------------------------------------------------------


def test_the_waiting_integral_over_the_prefilled_tokens_is_the_mean_wait():
    """rate(waited) / rate(prefilled) over a window is the token-weighted mean time a prompt
    waited for its first token, exactly: what the ttftSeconds query divides by."""
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    waits = {"a": (100, 0.2), "b": (300, 0.5), "c": (50, 1.5)}
    load.added("a", 100)
    load.added("b", 300)
    clock.advance(0.2)
    load.generated("a", 1)
    clock.advance(0.3)
    load.generated("b", 1)
    load.added("c", 50)
    clock.advance(1.5)
    load.generated("c", 1)
    clock.advance(7.0)  # nothing waits: the integral stands still
    expected = sum(tokens * wait for tokens, wait in waits.values())
    assert load.waited_token_seconds() == pytest.approx(expected)
    assert load.prefilled == 450
    mean_wait = load.waited_token_seconds() / load.prefilled
    assert mean_wait == pytest.approx((100 * 0.2 + 300 * 0.5 + 50 * 1.5) / 450)


def test_the_waiting_integral_counts_what_still_waits_and_never_goes_back():
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    load.added("a", 40)
    clock.advance(2.0)
    assert load.waited_token_seconds() == pytest.approx(80.0)  # still waiting: counted so far
    load.finished("a")  # aborted: its wait stays in the integral
    clock.advance(5.0)
    assert load.waited_token_seconds() == pytest.approx(80.0)
    readings = []
    for i in range(50):
        load.added(f"r{i}", i % 7)
        clock.advance(0.01 * (i % 3))
        readings.append(load.waited_token_seconds())
        if i % 2:
            load.generated(f"r{i}", 1)
        else:
            load.finished(f"r{i}")
        readings.append(load.waited_token_seconds())
    assert readings == sorted(readings)  # a counter: never decreases


def test_the_prefill_part_of_the_wait_is_counted_apart():
    """With vLLM's prefill interval of each first token, (waited - prefill) / prefilled is the
    mean time a prompt token queued: what more replicas shorten (the ttftSeconds query)."""
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    load.added("a", 100)
    load.added("b", 300)
    clock.advance(0.2)
    load.generated("a", 1, 0.2)  # scheduled at once: all prefill
    clock.advance(0.6)
    load.generated("b", 1, 0.3)  # queued 0.5 s, then 0.3 s of prefill
    load.generated("b", 1, 0.3)  # later tokens add nothing
    assert load.waited_token_seconds() == pytest.approx(100 * 0.2 + 300 * 0.8)
    assert load.prefill_token_seconds == pytest.approx(100 * 0.2 + 300 * 0.3)
    queued = load.waited_token_seconds() - load.prefill_token_seconds
    assert queued / load.prefilled == pytest.approx(300 * 0.5 / 400)


def test_the_prefill_part_never_exceeds_the_wait_and_unknown_adds_nothing():
    """An interval longer than the wait seen here (clocks of two processes, a request that
    arrived late in the API process) counts the wait only; none or a negative one, nothing."""
    clock = FakeClock()
    load = TokenLoad(clock=clock)
    for name in ("a", "b", "c", "d"):
        load.added(name, 10)
    clock.advance(0.5)
    load.generated("a", 1, 9.0)
    load.generated("b", 1, None)
    load.generated("c", 1, -1.0)
    load.generated("d", 1, 0.0)
    assert load.prefill_token_seconds == pytest.approx(10 * 0.5)
    assert load.waited_token_seconds() - load.prefill_token_seconds >= 0
    load.finished("a")
    load.added("e", 0)  # an empty prompt waits no tokens
    clock.advance(1.0)
    load.generated("e", 1, 0.5)
    assert load.prefill_token_seconds == pytest.approx(10 * 0.5)
