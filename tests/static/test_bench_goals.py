"""The benchmarks' one goals shape (bench/goals.py), the table `make bench` prints from it
(bench/all.py), and the goals lists startup.py, lora.py, orca.py and autoscale.py build from
their own results. Nothing here runs a benchmark."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"


def load(name: str):
    """bench/NAME.py as a module; `goals` under its own name, as the benchmarks import it."""
    module_name = "goals" if name == "goals" else f"bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if name != "goals":
        load("goals")
    spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


goals = load("goals")


@pytest.mark.parametrize(
    ("op", "value", "target", "met"),
    [
        ("<=", 10, 10, True),
        ("<=", 10.01, 10, False),
        (">=", 0.995, 0.995, True),
        (">=", 0.994, 0.995, False),
        ("==", 0, 0, True),
        ("==", 1, 0, False),
        ("<", 1.99, 2, True),
        ("<", 2, 2, False),
        (">", 0.95, 0.94, True),
        (">", 0.94, 0.94, False),
    ],
)
def test_goal_judges_each_comparison(op, value, target, met):
    entry = goals.goal("a figure", value, "s", op, target)
    assert entry == {"figure": "a figure", "value": value, "unit": "s",
                     "goal": f"{op} {target}", "met": met}  # fmt: skip


def test_goal_not_judged_says_why():
    entry = goals.goal("ratio", 0.989, "", ">=", 0.995, "inconclusive: noise", met=None)
    assert entry["met"] is None and entry["note"] == "inconclusive: noise"
    assert entry["goal"] == ">= 0.995" and entry["value"] == 0.989
    unmeasured = goals.goal("ratio", None, "", ">=", 0.995)
    assert unmeasured["met"] is None and unmeasured["note"] == "not measured"
    with pytest.raises(ValueError, match="unknown comparison"):
        goals.goal("ratio", 1, "", "=>", 1)


DOCS = [
    ("operator", {"goals": [goals.goal("requests per new VLLMDeployment", 7.2, "requests", "<=", 10)]}),
    ("orca", {"throughput": {}, "goals": [
        goals.goal("ORCA on/off throughput ratio", 0.989, "", ">=", 0.995,
                   "inconclusive: the identical-server spread is wider than the goal", met=None),
        goals.goal("per response, worst case", 23.5, "us", "<=", 20),
    ]}),
    ("lora", "exit status 1: RuntimeError: not loaded after 60 s"),
    ("startup", {"median": {}}),
]  # fmt: skip

TABLE = """\
benchmark  figure                                                      value         goal      met  note
---------  ----------------------------------------------------------  ------------  --------  ---  ----------------------------------------------------------------
operator   requests per new VLLMDeployment                             7.2 requests  <= 10     yes
orca       ORCA on/off throughput ratio                                0.989         >= 0.995  —    inconclusive: the identical-server spread is wider than the goal
orca       per response, worst case                                    23.5 us       <= 20     NO
lora       failed: exit status 1: RuntimeError: not loaded after 60 s                          —
startup    no goals list in its document                                                       —"""


def test_table_of_met_missed_unjudged_and_failed():
    assert goals.table(DOCS) == TABLE


def test_all_runs_each_benchmark_and_fails_only_on_a_failed_one(tmp_path, monkeypatch, capsys):
    """bench/all.py on stand-in benchmarks: one prints its document after a log line, one
    exits non-zero; the table shows both, the document is written, the exit status is 1."""
    (tmp_path / "bench").mkdir()
    document = {"x": 1, "goals": [goals.goal("a figure", 3, "s", "<=", 2)]}
    (tmp_path / "bench" / "startup.py").write_text(
        "import json, sys\nprint('progress', file=sys.stderr)\nprint('a log line')\n"
        f"print(json.dumps({document!r}, indent=2))\n"
    )
    (tmp_path / "bench" / "lora.py").write_text(
        "import sys\nprint('working', file=sys.stderr)\nsys.exit('lora: it broke')\n"
    )
    run_all = load("all")
    monkeypatch.setattr(run_all, "BENCH", tmp_path / "bench")
    out = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["all.py", "--only", "startup,lora", "--out", str(out)])
    with pytest.raises(SystemExit) as exited:
        run_all.main()
    assert exited.value.code == 1
    assert json.loads((out / "startup.json").read_text()) == document
    assert not (out / "lora.json").exists()
    table = capsys.readouterr().out
    assert "a figure" in table and " NO" in table
    assert "failed: exit status 1: lora: it broke" in table


def test_startup_goals_from_its_result():
    startup = load("startup")
    runs = {
        kind: [{"first_health_s": health, "ready_s": ready, "peak_rss_mib": 500.0}]
        for kind, health, ready in (("stock", 20.0, 20.0), ("ext", 0.4, 20.6))
    }
    saturation = {"stock": {"p99_ms": 80.0}, "ext": {"p99_ms": 12.0}}
    result = startup.summarize(runs, saturation)
    result["cold_start"] = {
        "model_bytes": 1000,
        "no_cache": {"replicas": 2, "bytes_fetched": 2000},
        "shared_cache_cold": {"replicas": 2, "bytes_fetched": 1000},
        "shared_cache_warm": {"replicas": 2, "bytes_fetched": 10},
    }
    listed = startup.goals(result)
    assert [(g["value"], g["goal"], g["met"]) for g in listed] == [
        (3.0, "<= 5", True),
        (0.4, "<= 1", True),
        (12.0, "<= 50", True),
        (2000, "== 2000", True),
        (1000, "== 1000", True),
        (10, "== 0", False),
    ]
    # The same verdicts as the document's own targets_met.
    assert [g["met"] for g in listed[:3]] == list(result["targets_met"].values())
    only_cold = startup.goals({"cold_start": result["cold_start"]})
    assert len(only_cold) == 3


def test_lora_goals_from_its_result():
    lora = load("lora")
    result = {
        "direct_load_seconds": 0.2,
        "apply_to_loaded": {
            "1": {"pods": 1, "servers": "real server", "over_direct_load_seconds": 0.3},
            "10": {"pods": 10, "servers": "test double", "over_direct_load_seconds": 0.4},
            "50": {"pods": 50, "servers": "test double", "over_direct_load_seconds": 0.7},
        },
        "reload_after_restart_seconds": 1.1,
    }
    listed = lora.goals(result)
    assert [(g["value"], g["goal"], g["met"]) for g in listed] == [
        (0.3, "<= 0.5", True),
        (0.7, "<= 0.5", False),
        (1.1, "<= 2", True),
    ]
    assert "10/50 pods" in listed[1]["figure"]
    assert [g["met"] for g in listed] == [v["met"] for v in lora.verdicts(result).values()]


def orca_result(
    verdict: str, ratio: float, identical: float, worst_us: float, cost: float | None = 0.1
) -> dict:
    """A hand-made document of bench/orca.py, as `goals` reads it."""
    return {
        "throughput": {"ratio_on_off": ratio, "ratio_identical_servers": identical,
                       "verdict": f"{verdict}: on/off gap {1 - ratio:+.2%}"},
        "per_phase": {"per_response": {"worst_case": {
            "format": "JSON", "case": "new snapshot every response", "added_us": worst_us}},
            "throughput_cost_percent_from_cpu_per_request": cost},
    }  # fmt: skip


def test_orca_goals_from_its_result(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # bench/orca.py imports startup.py as a sibling
    orca = load("orca")
    listed = orca.goals(orca_result("met", 0.998, 1.001, 17.5))
    assert [(g["value"], g["unit"], g["goal"], g["met"]) for g in listed] == [
        (0.998, "", ">= 0.995", True),
        (1.001, "", ">= 0.995", True),
        (17.5, "us", "<= 20", True),
        (0.1, "%", "<= 0.5", True),
    ]
    assert "JSON, new snapshot every response" in listed[2]["figure"]
    assert all("note" not in g for g in listed)

    missed = orca.goals(orca_result("not met", 0.97, 0.99, 23.5, cost=0.8))
    assert [g["met"] for g in missed] == [False, False, False, False]

    # Inconclusive: the run could not resolve 0.5 %, so the ratio is not judged, even above
    # the goal; the note is the verdict. No engine step count: no cost from the CPU figures.
    unsure = orca.goals(orca_result("inconclusive", 0.996, 0.98, 12.0, cost=None))
    assert [g["met"] for g in unsure] == [None, False, True, None]
    assert unsure[0]["note"].startswith("inconclusive: on/off gap")
    assert "note" not in unsure[1]
    assert unsure[3]["note"] == "not measured"
    assert goals.table([("orca", {"goals": unsure})]).count("orca ") == 4


def test_autoscale_goals_from_its_result():
    autoscale = load("autoscale")
    names = list(autoscale.POLICIES)
    figures = [(0.97, 9000), (0.95, 9500), (0.90, 8000), (0.99, 12000), (0.8, 7000)]
    policies = {
        name: {"slo_attainment": attained, "replica_seconds": seconds}
        for name, (attained, seconds) in zip(names, figures, strict=True)
    }
    result = {"all_seeds": {"policies": policies, "goal_met": autoscale.judge(policies)}}
    listed = autoscale.goals(result)
    assert [(g["value"], g["goal"], g["met"]) for g in listed] == [
        (0.97, "> 0.95", True),
        (9000, "<= 9500", True),
    ]
    policies[names[0]]["replica_seconds"] = 9600
    assert [g["met"] for g in autoscale.goals(result)] == [True, False]
    assert [g["met"] for g in autoscale.goals(result)] == list(autoscale.judge(policies).values())
