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
