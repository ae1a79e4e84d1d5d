"""Lifecycle state: phase order, timings, and its Prometheus rendering."""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vllm_server_ext.lifecycle import STARTUP_PHASES, Phase, ServerState, StateCollector


def samples(state: ServerState) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_phases_move_forward_and_record_durations():
    state = ServerState()
    for phase in STARTUP_PHASES[1:]:
        state.enter(phase)
    state.enter(Phase.READY)
    assert state.ready
    assert set(state.durations) == set(STARTUP_PHASES)
    assert all(d >= 0 for d in state.durations.values())


def test_late_report_of_an_earlier_phase_is_ignored():
    state = ServerState()
    state.enter(Phase.WARMING_UP)
    state.enter(Phase.PROFILING)  # a datagram that arrived late
    assert state.phase == Phase.WARMING_UP
    state.enter(Phase.READY)
    state.enter(Phase.LOADING_MODEL)
    assert state.phase == Phase.READY


def test_runtime_states_come_and_go_but_dead_is_reported():
    state = ServerState()
    state.enter(Phase.READY)
    state.enter(Phase.SLEEPING)
    assert not state.ready
    state.enter(Phase.READY)
    assert state.ready
    state.fail("engine died")
    assert state.describe()["phase"] == "dead"
    assert state.describe()["error"] == "engine died"


def test_describe_names_phase_and_counts_the_current_one():
    state = ServerState()
    state.enter(Phase.IMPORTING)
    body = state.describe()
    assert body["ready"] is False
    assert body["phase"] == "importing"
    assert body["instance_id"] == state.instance_id
    assert set(body["startup_seconds"]) == {"starting", "importing"}


def test_instance_ids_differ_between_processes_states():
    assert ServerState().instance_id != ServerState().instance_id


def test_metrics_one_hot_phase_and_instance():
    state = ServerState()
    state.enter(Phase.LOADING_MODEL)
    got = samples(state)
    phases = {labels[0][1]: v for (name, labels), v in got.items() if name == "vllm:server_phase"}
    assert phases == {p.value: (1.0 if p == Phase.LOADING_MODEL else 0.0) for p in Phase}
    assert got[("vllm:server_ready", ())] == 0.0
    assert got[("vllm:server_instance_info", (("instance_id", state.instance_id),))] == 1.0
    durations = {
        labels[0][1] for (name, labels), _ in got.items()
        if name == "vllm:startup_phase_duration_seconds"
    }  # fmt: skip
    assert durations == {"starting", "loading_model"}


def test_joining_group_comes_and_goes_within_loading_model():
    """Multi-node: a worker process reports `joining_group` when it starts waiting for the other
    nodes and `loading_model` once it joined; the seconds of each add up, and neither goes back
    past a later phase."""
    state = ServerState()
    state.enter(Phase.IMPORTING)
    state.enter(Phase.JOINING_GROUP)  # before the launcher's own loading_model: still forward
    state.enter(Phase.LOADING_MODEL)
    state.enter(Phase.JOINING_GROUP)
    assert state.phase == Phase.JOINING_GROUP
    assert set(state.describe()["startup_seconds"]) == {
        "starting", "importing", "joining_group", "loading_model"
    }  # fmt: skip
    state.enter(Phase.LOADING_MODEL)
    first = state.durations[Phase.JOINING_GROUP]
    state.enter(Phase.JOINING_GROUP)
    state.enter(Phase.PROFILING)
    assert state.durations[Phase.JOINING_GROUP] >= first
    state.enter(Phase.JOINING_GROUP)  # a late report
    state.enter(Phase.LOADING_MODEL)
    assert state.phase == Phase.PROFILING
    state.enter(Phase.READY)
    state.enter(Phase.JOINING_GROUP)
    assert state.phase == Phase.READY


def test_a_worker_says_so_in_its_ready_body():
    state = ServerState(worker=True)
    assert state.describe()["role"] == "worker"
    assert "role" not in ServerState().describe()


def test_dead_is_final():
    """vLLM shuts a dead engine's client down on its way out: that is no drain."""
    state = ServerState()
    state.enter(Phase.READY)
    state.fail("the engine died")
    state.enter(Phase.DRAINING)
    state.enter(Phase.READY)
    assert state.phase == Phase.DEAD
