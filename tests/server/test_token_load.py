"""TokenLoad bookkeeping: every request event moves the totals by exactly its tokens."""

import random

from vllm_server_ext.token_load import TokenLoad


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


def test_the_collector_exposes_both_totals_with_vllms_labels_at_scrape_time():
    from prometheus_client import CollectorRegistry, generate_latest

    from vllm_server_ext.token_load import TokenLoadCollector

    load = TokenLoad()
    registry = CollectorRegistry()
    registry.register(TokenLoadCollector(load, model_name="tiny", engine="1"))
    load.added("a", 10)
    load.added("b", 5)
    load.generated("a", 2)
    assert generate_latest(registry).decode().splitlines() == [
        "# HELP vllm:num_tokens_running Prompt plus generated tokens of requests that have produced output.",
        "# TYPE vllm:num_tokens_running gauge",
        'vllm:num_tokens_running{engine="1",model_name="tiny"} 12.0',
        "# HELP vllm:num_tokens_waiting Prompt tokens of requests queued or in prefill (no output token yet).",
        "# TYPE vllm:num_tokens_waiting gauge",
        'vllm:num_tokens_waiting{engine="1",model_name="tiny"} 5.0',
    ]
    load.finished("a")  # read on the next scrape, no update of its own
    assert (
        'vllm:num_tokens_running{engine="1",model_name="tiny"} 0.0'
        in generate_latest(registry).decode().splitlines()
    )


def test_the_collector_labels_engine_0_by_default():
    from vllm_server_ext.token_load import TokenLoadCollector

    (running, waiting) = TokenLoadCollector(TokenLoad(), model_name="tiny").collect()
    for family in (running, waiting):
        assert [s.labels for s in family.samples] == [{"model_name": "tiny", "engine": "0"}]
