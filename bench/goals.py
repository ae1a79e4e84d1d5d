"""One shape for every benchmark's goals, and the table `make bench` prints from them.

Each benchmark's JSON document has, beside its own keys, a top-level "goals" list, one entry
per judged figure:

    "goals": [
      {"figure": "requests per new VLLMDeployment", "value": 7.2, "unit": "requests",
       "goal": "<= 10", "met": true},
      {"figure": "ORCA on/off throughput ratio", "value": 0.989, "unit": "", "goal": ">= 0.995",
       "met": null, "note": "inconclusive: the identical-server spread is wider than the goal"}
    ]

- figure: what is measured, in words; value: a number, or null when not measured;
- unit: "s", "ms", "%", "bytes", ... or "" for a ratio;
- goal: the comparison as a short string, "<op> <target>";
- met: true / false, or null when not judged, with a "note" saying why.

Build the entries with `goal(...)`, preferably in a pure `goals(result) -> list[dict]` of the
benchmark module (tests/static/test_bench_goals.py calls it with a hand-made result). A module
run as `python bench/NAME.py` has bench/ first on sys.path, so `from goals import goal` works.
"""

from __future__ import annotations

from collections.abc import Callable

# Not the operator module: bench/operator.py would shadow it for scripts run from bench/.
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda value, target: value <= target,
    ">=": lambda value, target: value >= target,
    "==": lambda value, target: value == target,
    "<": lambda value, target: value < target,
    ">": lambda value, target: value > target,
}

_JUDGE = object()  # met not given: judged from value, op and target


def goal(
    figure: str,
    value: float | None,
    unit: str,
    op: str,
    target: float,
    note: str | None = None,
    *,
    met: object = _JUDGE,  # True, False or None (not judged)
) -> dict[str, object]:
    """One "goals" entry; `met` judged from value, op and target unless given (met=None:
    not judged, with a note saying why). A value of None is not judged either."""
    if op not in OPS:
        raise ValueError(f"unknown comparison {op!r}, one of {', '.join(OPS)}")
    if met is _JUDGE:
        met = None if value is None else OPS[op](value, target)
    if met is None and note is None:
        note = "not measured" if value is None else "not judged"
    entry: dict[str, object] = {
        "figure": figure,
        "value": value,
        "unit": unit,
        "goal": f"{op} {_number(target)}",
        "met": met,
    }
    if note is not None:
        entry["note"] = note
    return entry


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def table(docs: list[tuple[str, dict | str]]) -> str:
    """A plain-text table of (benchmark name, its JSON document) pairs; a string in place of
    the document is the reason that benchmark failed."""
    rows = [("benchmark", "figure", "value", "goal", "met", "note")]
    for name, doc in docs:
        if isinstance(doc, str):
            rows.append((name, f"failed: {doc}", "", "", "—", ""))
            continue
        if not doc.get("goals"):
            rows.append((name, "no goals list in its document", "", "", "—", ""))
        for entry in doc.get("goals", []):
            value = " ".join(filter(None, (_number(entry["value"]), entry["unit"])))
            met = {True: "yes", False: "NO", None: "—"}[entry["met"]]
            rows.append((name, entry["figure"], value, entry["goal"], met, entry.get("note", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
