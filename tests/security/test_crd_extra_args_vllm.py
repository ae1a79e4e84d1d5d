"""The extraArgs rule against vLLM's own parser (the one vllm-ext-serve hands its arguments to):
every spelling that vLLM resolves to a flag the operator manages (the flag, an alias, an
unambiguous abbreviation, with `=value` or `.key`, with underscores) is refused, and no spelling
vLLM resolves to another flag is. Needs vLLM (its parser takes seconds to build)."""

from __future__ import annotations

import re
from functools import cache

import pytest

from vllm_operator.model import spec as spec_module

pytestmark = pytest.mark.vllm

# vllm-ext-serve's own flags (its parser takes them before vLLM's sees the rest).
EXTENSION_FLAGS = ("--admin-", "--log-format", "--lora-allowed-roots", "--orca-")


@cache
def vllm_options() -> dict[str, str]:
    """vLLM's option strings -> their destination, as `vllm serve` parses them."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm-ext-serve"))
    assert parser.allow_abbrev  # why prefixes are refused at all
    return {option: action.dest for option, action in parser._option_string_actions.items()}


def resolved(arg: str) -> str | None:
    """The option argparse takes `arg` for: itself, or the one option it abbreviates (None when
    it abbreviates several: vLLM exits on those)."""
    options = vllm_options()
    if arg in options:
        return arg
    matches = [o for o in options if o.startswith(arg)]
    return matches[0] if len(matches) == 1 else None


def managed_destinations() -> set[str]:
    options = vllm_options()
    ours = [f for f in spec_module.MANAGED_FLAGS if f in options]
    return {options[f] for f in ours}


def refused(arg: str) -> bool:
    return re.match(spec_module.EXTRA_ARG_PATTERN, arg) is not None


def test_the_managed_vllm_flags_exist_with_all_their_aliases():
    options = vllm_options()
    for flag in spec_module.MANAGED_FLAGS:
        if not flag.startswith(EXTENSION_FLAGS):
            assert flag in options, f"vLLM has no {flag} (renamed?)"
    destinations = managed_destinations()
    aliases = {o for o, dest in options.items() if dest in destinations}
    assert aliases <= set(spec_module.MANAGED_FLAGS), aliases - set(spec_module.MANAGED_FLAGS)


def test_every_spelling_vllm_resolves_to_a_managed_flag_is_refused_and_no_other():
    """Except abbreviations of vLLM's flags that are also prefixes of vllm-ext-serve's own: its
    parser takes no abbreviations, the rule refuses every prefix all the same (one needlessly:
    `--ad`, which vLLM takes for --additional-config)."""
    options, destinations = vllm_options(), managed_destinations()
    wrong, needless = [], set()
    for option in options:
        dashes = 2 if option.startswith("--") else 1
        for end in range(dashes + 1, len(option) + 1):
            prefix = option[:end]
            target = resolved(prefix)
            if target is None:
                continue  # ambiguous: vLLM refuses it itself
            managed = options[target] in destinations
            spellings = [prefix, f"{prefix}=1", f"{prefix}.key"]
            if dashes == 2:
                spellings.append("--" + prefix[2:].replace("-", "_"))
            for arg in spellings:
                if refused(arg) == managed:
                    continue
                if not managed and any(f.startswith(prefix) for f in EXTENSION_FLAGS):
                    needless.add(prefix)
                else:
                    wrong.append((arg, target, managed))
    assert wrong == []
    assert needless == {"--ad"}
