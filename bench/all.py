"""Every benchmark, one after the other, then one table: each figure, its goal, met or not.

    python bench/all.py [--only startup,lora,...] [--out bench/results] [--quick]

Each benchmark runs as a subprocess of this Python (`make bench`: the venv's), its stderr
passed through (progress), its stdout's JSON document written to OUT/NAME.json. The table is
built from each document's "goals" list (bench/goals.py). A benchmark that exits non-zero or
prints no JSON shows as "failed: <its last stderr line>" and makes the exit status 1; the
others still run. A goal not met is a result, not a failure. --quick passes each benchmark
smaller arguments: figures to try the machinery with, not to judge by.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from goals import table

BENCH = Path(__file__).resolve().parent
BENCHMARKS = ("startup", "lora", "autoscale", "orca", "operator")
QUICK = {
    "startup": ["--runs", "1", "--health-probes", "50"],
    "lora": ["--sizes", "1,10"],
    "autoscale": ["--minutes", "20", "--seeds", "1", "2", "--no-measure"],
    "orca": ["--rounds", "5", "--requests", "32", "--cost-iterations", "2000",
             "--cost-repeats", "3", "--grpc-seconds", "3"],
    "operator": ["--count", "20", "--rest-seconds", "10", "--changes", "5"],
}  # fmt: skip


# The full run's arguments, where not each benchmark's defaults: the operator's goals are
# judged at scale (1,000 VLLMDeployments, 1,000 LoraAdapters, 200 pods).
FULL = {"operator": ["--scale"]}


def run(name: str, args: list[str], out: Path) -> dict | str:
    """The benchmark's JSON document (also written to OUT/NAME.json), or why it failed."""
    argv = [sys.executable, str(BENCH / f"{name}.py"), *args]
    print(f"== {name}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    last = ""
    # stdout to a file: reading stderr line by line while a full stdout pipe blocks would hang.
    with tempfile.TemporaryFile() as stdout:
        proc = subprocess.Popen(
            argv, cwd=BENCH.parent, stdout=stdout, stderr=subprocess.PIPE, text=True
        )
        for line in proc.stderr:  # type: ignore[union-attr]
            sys.stderr.write(line)
            last = line.strip() or last
        code = proc.wait()
        stdout.seek(0)
        text = stdout.read().decode(errors="replace")
    if code != 0:
        return f"exit status {code}: {last}"
    start = re.search(r"^\{$", text, re.M)  # the document, past any log lines before it
    try:
        doc = json.loads(text[start.start() :] if start else text)
    except ValueError:
        return f"no JSON on stdout: {last}"
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--quick", action="store_true", help="smaller arguments, faster runs")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}, of {', '.join(BENCHMARKS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = QUICK if args.quick else FULL
    docs = [(name, run(name, chosen.get(name, []), args.out)) for name in names]
    print(table(docs))
    sys.exit(1 if any(isinstance(doc, str) for _, doc in docs) else 0)


if __name__ == "__main__":
    main()
