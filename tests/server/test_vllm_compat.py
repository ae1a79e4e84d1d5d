"""The vLLM compat module: every vLLM symbol it relies on is still where it was, and nothing else
in the package touches vLLM. After a vLLM upgrade, this fails in seconds with the list of what
moved, before any server is started. (That no other module imports vLLM is an import contract:
tests/static/test_layers.py.)"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import vllm_server_ext
from vllm_server_ext import SUPPORTED_VLLM

PACKAGE = Path(vllm_server_ext.__file__).parent
COMPAT = f"vllm_server_ext.vllm_{SUPPORTED_VLLM.replace('.', '_')}"
COMPAT_FILE = PACKAGE / f"{COMPAT.rsplit('.', 1)[1]}.py"


def load_compat() -> tuple[ModuleType, str | None]:
    """The compat module, and the error of its vLLM imports if they fail: its table comes before
    them, so it is read even then (from a second run of the module, kept as far as it got)."""
    try:
        return importlib.import_module(COMPAT), None
    except ImportError as e:
        error = f"{COMPAT} imports: {type(e).__name__}: {e}"
    spec = importlib.util.find_spec(COMPAT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[COMPAT] = module  # as during an import (dataclasses look their module up)
    try:
        spec.loader.exec_module(module)
    except ImportError:
        pass
    finally:
        del sys.modules[COMPAT]
    return module, error


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


def test_the_compat_module_is_named_for_the_supported_vllm():
    assert COMPAT_FILE.exists(), f"{COMPAT_FILE.name} missing for vLLM {SUPPORTED_VLLM}"


@pytest.mark.vllm
def test_every_vllm_symbol_in_the_table_is_still_there():
    compat, import_error = load_compat()
    problems = [import_error] if import_error else []
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


@pytest.mark.vllm  # reading the table imports the compat module, vLLM with it
def test_the_tables_list_everything_the_package_uses():
    """Each vLLM import of the compat module is in its table, each `args.X` read by the
    launcher or the compat module is in `SERVE_ARGS`: neither table can fall behind the code."""
    compat, _ = load_compat()
    listed = {(s.module, s.name.split(".")[0]) for s in compat.VLLM_SYMBOLS}
    modules = {s.module for s in compat.VLLM_SYMBOLS}
    imported = vllm_imports(ast.parse(COMPAT_FILE.read_text()))
    unlisted = sorted(
        f"{module}:{name}" if name else module
        for module, name in imported
        if ((module, name) not in listed if name else module not in modules)
    )
    assert unlisted == []
    read = set()
    for path in (PACKAGE / "launcher.py", COMPAT_FILE):
        read |= set(re.findall(r"\bargs\.(\w+)", path.read_text()))
    assert sorted(read - compat.SERVE_ARGS) == []
