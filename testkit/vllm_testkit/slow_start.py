"""A deliberately slow server start, for tests of what the operator reports while a model
loads: `import vllm` in the server process waits `seconds` first (the server meanwhile answers
`/health` and `/ready`, phase `importing`, as during any long start)."""

from __future__ import annotations

from pathlib import Path

_SITECUSTOMIZE = """\
import importlib.abc
import sys
import time


class _SlowVLLM(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "vllm":
            sys.meta_path.remove(self)
            time.sleep({seconds})
        return None


sys.meta_path.insert(0, _SlowVLLM())
"""


def slow_import_env(directory: Path, seconds: float) -> dict[str, str]:
    """Environment for a server process whose `import vllm` takes `seconds` longer (a
    `sitecustomize` module in `directory`, put first on its PYTHONPATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(seconds=float(seconds)))
    return {"PYTHONPATH": str(directory)}
