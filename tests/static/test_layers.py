"""The layers the file tree shows hold in the imports: import-linter checks the contracts in
pyproject.toml (the operator's layers, a pure model layer, products that share no code and never
import the test kit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_import_contracts_are_kept():
    result = subprocess.run(
        [Path(sys.executable).parent / "lint-imports", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_operator_unit_tests_import_neither_vllm_nor_numpy():
    """Collecting the operator's tests loads no vLLM and no numpy (the tiny-model and server
    helpers are imported inside the fixtures that need them)."""
    check = (
        "import sys, pytest\n"
        "pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'tests/operator'])\n"
        "print(sorted(m for m in ('numpy', 'vllm', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-2000:]
