"""The vLLM compat package: every vLLM symbol it relies on is still where it was, and nothing else
in the package touches vLLM. After a vLLM upgrade, this fails in seconds with the list of what
moved, before any server is started. (That no other module imports vLLM, and that the engine
side imports nothing of the API server's, are import contracts: tests/static/test_layers.py.)"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import vllm_server_ext
from vllm_server_ext import SUPPORTED_VLLM, engine_plugin
from vllm_server_ext.engine_phases import PHASE_SOCKET_ENV

PACKAGE = Path(vllm_server_ext.__file__).parent
COMPAT = f"vllm_server_ext.vllm_{SUPPORTED_VLLM.replace('.', '_')}"
COMPAT_DIR = PACKAGE / COMPAT.rsplit(".", 1)[1]
COMPAT_FILES = sorted(COMPAT_DIR.glob("*.py"))
# The compat package's modules that import vLLM (its __init__, the tables, imports none).
COMPAT_MODULES = [f"{COMPAT}.{path.stem}" for path in COMPAT_FILES if path.stem != "__init__"]


def load_compat() -> tuple[types.ModuleType, list[str]]:
    """The compat package's tables (they import no vLLM, so they are read even when vLLM moved),
    and the errors of its modules' vLLM imports."""
    errors = []
    for name in COMPAT_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name} imports: {type(e).__name__}: {e}")
    return importlib.import_module(COMPAT), errors


def resolve(module: str, name: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def leading_params(obj: Any) -> list[str]:
    params = list(inspect.signature(obj).parameters)
    return params[1:] if params[:1] in (["self"], ["cls"]) else params


def has_attr(obj: Any, attr: str) -> bool:
    """Whether instances of `obj` have `attr` (a class attribute, a declared field, or one its
    code assigns), or, for a function, whether it sets `attr` on the object it fills."""
    if hasattr(obj, attr):
        return True
    if isinstance(obj, type):
        for klass in obj.__mro__:
            if attr in getattr(klass, "__annotations__", {}):
                return True
        if attr in getattr(obj, "model_fields", {}):  # pydantic
            return True
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return False
    return re.search(rf"\.{attr}\s*(:[^=\n]+)?=[^=]", source) is not None


def vllm_imports(tree: ast.AST) -> set[tuple[str, str | None]]:
    """(module, name) for every `from vllm... import name` and (module, None) for every
    `import vllm...`, wherever they are (functions included)."""
    found: set[tuple[str, str | None]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm":
            found |= {(node.module, alias.name) for alias in node.names}  # type: ignore[misc]
        elif isinstance(node, ast.Import):
            found |= {(a.name, None) for a in node.names if a.name.split(".")[0] == "vllm"}
    return found


def test_the_compat_package_is_named_for_the_supported_vllm():
    assert (COMPAT_DIR / "__init__.py").exists(), f"{COMPAT_DIR.name}/ missing for {SUPPORTED_VLLM}"
    assert {"api", "engine"} <= {name.rsplit(".", 1)[1] for name in COMPAT_MODULES}


def test_the_compat_tables_import_no_vllm():
    """The tables are read without vLLM (and before every `engine` or `api` import)."""
    tree = ast.parse((COMPAT_DIR / "__init__.py").read_text())
    assert vllm_imports(tree) == set()
    assert [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0  # nothing of the package either
    ] == []


@pytest.mark.vllm
def test_every_vllm_symbol_in_the_table_is_still_there():
    compat, problems = load_compat()
    for symbol in compat.VLLM_SYMBOLS:
        where = f"{symbol.module}:{symbol.name}"
        try:
            obj = resolve(symbol.module, symbol.name)
        except (ImportError, AttributeError) as e:
            problems.append(f"{where}: {type(e).__name__}: {e}")
            continue
        if symbol.params:
            params = leading_params(obj)
            if params[: len(symbol.params)] != list(symbol.params):
                problems.append(
                    f"{where}: parameters {params}, expected {list(symbol.params)} first"
                )
        missing = [attr for attr in symbol.attrs if not has_attr(obj, attr)]
        if missing:
            problems.append(f"{where}: no attribute {', '.join(missing)}")
    assert problems == [], "vLLM moved:\n" + "\n".join(problems)


@pytest.mark.vllm
def test_every_serve_argument_read_is_still_a_vllm_serve_argument():
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    compat, _ = load_compat()
    dests = {action.dest for action in make_arg_parser(FlexibleArgumentParser())._actions}
    assert sorted(compat.SERVE_ARGS - dests) == []


def test_the_tables_list_everything_the_package_uses():
    """Each vLLM import of any module of the compat package is in its table, each `args.X` read
    by the launcher or the compat package is in `SERVE_ARGS`: neither table can fall behind the
    code. (Reads the source only: no vLLM needed.)"""
    compat = importlib.import_module(COMPAT)
    listed = {(s.module, s.name.split(".")[0]) for s in compat.VLLM_SYMBOLS}
    modules = {s.module for s in compat.VLLM_SYMBOLS}
    unlisted = []
    for path in COMPAT_FILES:
        for module, name in vllm_imports(ast.parse(path.read_text())):
            if (module, name) not in listed if name else module not in modules:
                unlisted.append(f"{path.name}: {module}" + (f":{name}" if name else ""))
    assert sorted(unlisted) == []
    read = set()
    for path in (PACKAGE / "launcher.py", *COMPAT_FILES):
        read |= set(re.findall(r"\bargs\.(\w+)", path.read_text()))
    assert sorted(read - compat.SERVE_ARGS) == []


# --- the engine plugin -----------------------------------------------------------------------


@pytest.fixture
def warnings_logged() -> Iterator[list[logging.LogRecord]]:
    """The package's log records (its logger may not propagate: see `logs.configure`)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("vllm_server_ext")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_a_failing_engine_hook_does_not_stop_the_engine(monkeypatch, warnings_logged):
    """vLLM calls `register()` unguarded: a failure costs the phase reports (one warning line),
    not the engine."""
    broken = types.ModuleType(f"{COMPAT}.engine")

    def hook_engine_startup(**_: object) -> None:
        raise AttributeError("type object 'EngineCore' has no attribute '_initialize_kv_caches'")

    broken.hook_engine_startup = hook_engine_startup  # type: ignore[attr-defined]
    broken.hook_worker_startup = lambda **_: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"{COMPAT}.engine", broken)
    monkeypatch.setenv(PHASE_SOCKET_ENV, "@vllm-ext-test-nowhere")
    engine_plugin.register()
    assert [(r.levelname, r.getMessage()) for r in warnings_logged] == [
        (
            "WARNING",
            "vllm-ext-serve: the engine's startup phases will not be reported (profiling, "
            "warming_up): AttributeError: type object 'EngineCore' has no attribute "
            "'_initialize_kv_caches'",
        )
    ]


def test_an_engine_hook_that_cannot_import_does_not_stop_the_engine(monkeypatch, warnings_logged):
    monkeypatch.setitem(sys.modules, f"{COMPAT}.engine", None)  # its import raises
    monkeypatch.setenv(PHASE_SOCKET_ENV, "@vllm-ext-test-nowhere")
    engine_plugin.register()
    # One line per hook: the engine's phases, the workers' (multi-node) phase.
    assert len(warnings_logged) == 2
    assert all("will not be reported" in r.getMessage() for r in warnings_logged)
    assert all("ModuleNotFoundError" in r.getMessage() for r in warnings_logged)


def test_the_engine_plugin_does_nothing_outside_vllm_ext_serve(monkeypatch, warnings_logged):
    monkeypatch.setitem(sys.modules, f"{COMPAT}.engine", None)  # would fail if imported
    monkeypatch.delenv(PHASE_SOCKET_ENV, raising=False)
    engine_plugin.register()
    assert warnings_logged == []


@pytest.mark.vllm
def test_the_engine_plugin_imports_nothing_of_the_api_server():
    """vLLM loads the plugin in every process it starts: in the engine core's (and its workers'),
    `register()` adds no launcher, uvicorn, FastAPI or vLLM entry point module to what
    `vllm.v1.engine.core` (already loaded there) brings, and hooks the engine core."""
    check = (
        "import sys\n"
        "import vllm.v1.engine.core\n"
        "before = set(sys.modules)\n"
        "from vllm_server_ext import engine_plugin\n"
        "engine_plugin.register()\n"
        "heavy = ('uvicorn', 'fastapi', 'vllm.entrypoints', 'vllm_server_ext.vllm_0_32.api',\n"
        "         'vllm_server_ext.launcher', 'vllm_server_ext.routes', 'starlette', 'watchfiles')\n"
        "added = sorted(m for m in set(sys.modules) - before if m.startswith(heavy))\n"
        "from vllm.v1.worker.worker_base import WorkerWrapperBase\n"
        "hooked = getattr(vllm.v1.engine.core.EngineCore, '_vllm_ext_startup_hook', False)\n"
        "hooked = hooked and getattr(WorkerWrapperBase, '_vllm_ext_startup_hook', False)\n"
        "print('uvicorn' in sys.modules, hooked, added)\n"
    )
    env = os.environ | {PHASE_SOCKET_ENV: "@vllm-ext-test-nowhere"}
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False True []", result.stderr[-3000:]
