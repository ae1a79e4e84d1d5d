"""`vllm-ext-serve` takes every `vllm serve` flag as `vllm serve` does: each passes through our
parser untouched (ours never swallow, abbreviate-match or clash with one), the address we bind
before vLLM is imported is the one vLLM reads, and what we refuse is refused on purpose, in one
line naming the flag. vLLM's flags come from its own parser, so a new vLLM is checked as a whole."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vllm_server_ext import cli

pytestmark = pytest.mark.vllm

ADDRESS_FLAGS = {"--host", "--port", "--uds"}
DEFAULT_ADDRESS = ("", 8000, None)  # host, port, uds


@pytest.fixture(scope="module")
def vllm_parser() -> argparse.ArgumentParser:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser())


def spellings(action: argparse.Action) -> list[list[str]]:
    """Every way to give `action` on a command line: each option string, with a value if it
    takes one, also as `--flag=value` and `--flag_with_underscores` (vLLM accepts both)."""
    out = []
    for option in action.option_strings:
        if action.nargs == 0:
            out.append([option])
            continue
        out += [[option, "1"], [f"{option}=1"]]
        if option.startswith("--") and "-" in option[2:]:
            out.append(["--" + option[2:].replace("-", "_"), "1"])
    return out


def test_every_vllm_serve_flag_passes_through_unchanged(vllm_parser):
    extras = [["-O3"], ["--compilation-config.mode", "3"], ["--hf-overrides.a.b+", "x"]]
    changed = []
    for args in [s for a in vllm_parser._actions for s in spellings(a)] + extras:
        inv = cli.parse_command_line(["m", *args])
        address = (inv.host, inv.port, inv.uds)
        if inv.vllm_argv != ["--model", "m", *args]:
            changed.append(f"{args} -> {inv.vllm_argv}")
        elif args[0].split("=")[0] not in ADDRESS_FLAGS and address != DEFAULT_ADDRESS:
            changed.append(f"{args} read as the address {address}")
    assert changed == []


def test_our_flags_are_none_of_vllms(vllm_parser):
    def names(parser: argparse.ArgumentParser) -> set[str]:
        return {o.replace("_", "-") for a in parser._actions for o in a.option_strings}

    ours = names(cli._extension_parser())
    assert ours & names(vllm_parser) == set()
    # Ours match whole names only: a prefix of one of ours may be a whole vLLM flag.
    assert cli._extension_parser().allow_abbrev is False


@pytest.mark.parametrize(
    "args",
    [
        [],  # vLLM's defaults
        ["--port", "9001"],
        ["--port=9001"],
        ["--por", "9001"],
        ["--por=9001"],
        ["--host", "10.0.0.1"],
        ["--hos", "::1"],
        ["--uds", "/tmp/api.sock"],
        ["--ud", "/tmp/api.sock"],
    ],
)
def test_the_bound_address_is_the_one_vllm_reads(vllm_parser, args):
    inv = cli.parse_command_line(["m", *args])
    read = vllm_parser.parse_args(inv.vllm_argv)
    # `setup_server` binds `(args.host or "", args.port)`, or `args.uds`.
    assert (inv.host, inv.port, inv.uds) == (read.host or "", read.port, read.uds)


def test_with_no_address_flags_we_bind_vllms_default_address(vllm_parser):
    inv = cli.parse_command_line(["m"])
    read = vllm_parser.parse_args(inv.vllm_argv)
    assert (read.host, read.port, read.uds) == (None, 8000, None)  # vLLM's, as this test knows
    assert (inv.host, inv.port, inv.uds) == (read.host or "", read.port, read.uds)
    assert (inv.host, inv.port, inv.uds) == DEFAULT_ADDRESS


@pytest.fixture
def config_with_port(tmp_path: Path) -> str:
    path = tmp_path / "serve.yaml"
    path.write_text("port: 9100\n")
    return str(path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--headless"], "argument --headless: vllm-ext-serve runs it as the worker of a multi-node replica only: give --nnodes above 1 and --node-rank above 0"),
        (["--headless", "--nnodes", "2", "--node-rank", "0"], "argument --headless: vllm-ext-serve runs it as the worker of a multi-node replica only: give --nnodes above 1 and --node-rank above 0"),
        (["--headless", "--nnodes", "2", "--node-rank", "1", "--api-server-count", "1"], "argument --api-server-count: not allowed with --headless (a worker serves no API)"),
        (["--headless", "--nnodes", "2", "--node-rank", "1", "-dp", "2", "-tp", "1"], "argument --headless: not supported by vllm-ext-serve with --data-parallel-size above 1 (its worker role spans tensor and pipeline parallelism only)"),
        (["--api-server-count", "2"], "argument --api-server-count: 2 is not supported by vllm-ext-serve (one API server per process)"),
        (["-asc", "0"], "argument --api-server-count: 0 is not supported by vllm-ext-serve (one API server per process)"),
        (["--grpc"], "argument --grpc: not supported by vllm-ext-serve (it serves HTTP)"),
        (["-dpm", "-dp", "2", "-dpl", "2"], "argument --data-parallel-multi-port-external-lb: not supported by vllm-ext-serve (one API server per process)"),
        (["--orca-formats", "TEXT", "--disable-log-stats"], "ORCA load reports need the engine's stats: drop --disable-log-stats"),
        (["--uds", "/tmp/s", "--admin-port", "8001"], "argument --admin-port: not allowed with --uds"),
        (["--config", "CONFIG"], "argument --port: 9100 in --config, but the server bound 8000 from the command line before reading it: give --port on the command line"),
    ],
)  # fmt: skip
def test_what_we_refuse_is_refused_in_one_line(
    args, expected, config_with_port, capsys, monkeypatch
):
    from vllm_server_ext import launcher

    # vLLM's CLI setup writes this into the environment; keep it out of the test process.
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    args = [config_with_port if a == "CONFIG" else a for a in args]
    with pytest.raises(SystemExit) as exited:
        launcher.parse_vllm_args(cli.parse_command_line(["m", *args]))
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"vllm-ext-serve: error: {expected}\n"


def test_the_worker_role_is_accepted_with_the_leaders_arguments(monkeypatch):
    """The worker of a multi-node replica (`--headless`, a node rank above 0) takes the leader's
    arguments (LoRA included: vLLM's engine flags configure its workers too)."""
    from vllm_server_ext import launcher

    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    monkeypatch.delenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", raising=False)
    args = launcher.parse_vllm_args(
        cli.parse_command_line(
            ["m", "-tp", "2", "--nnodes", "2", "--node-rank", "1", "--headless",
             "--enable-lora", "--admin-port", "8001", "--lora-allowed-roots", "/models",
             "--orca-formats", "TEXT", "--orca-grpc-port", "8002", "--disable-log-stats"]
        )
    )  # fmt: skip
    assert (args.headless, args.nnodes, args.node_rank) == (True, 2, 1)
    assert args.enable_lora
    import os

    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in os.environ  # no LoRA routes to turn on


@pytest.mark.parametrize("accelerator", ["CPU", "GPU"])
def test_the_operator_s_multi_node_pods_start_as_leader_and_worker(accelerator, monkeypatch):
    """The arguments the operator gives a LeaderWorkerSet's pods, with LWS's variables expanded
    as the kubelet does (the second pod of group 3), are taken by vllm-ext-serve: the leader
    as node 0 of the API's group, the worker as node 1, headless."""
    from vllm_operator.model.builders import build_leader_worker_set
    from vllm_operator.model.spec import parse_deployment
    from vllm_server_ext import launcher
    from vllm_testkit.admin_key import PUBLIC_KEY
    from vllm_testkit.samples import IMAGES, vllmd

    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    fields = {"accelerator": accelerator, "parallelism": {"tensor": 2, "pipeline": 2, "nodes": 2}}
    if accelerator == "GPU":
        fields["gpusPerReplica"] = 2
    body = vllmd("big", {"model": {"uri": "hf://org/m"}, "lora": {"enabled": True},
                         "orca": {"formats": ["TEXT"], "grpcPort": 9000}, **fields})  # fmt: skip
    lws = build_leader_worker_set(parse_deployment(body, IMAGES), PUBLIC_KEY)
    templates = lws["spec"]["leaderWorkerTemplate"]
    parsed = {}
    for role, index in (("leaderTemplate", "0"), ("workerTemplate", "1")):
        (container,) = templates[role]["spec"]["containers"]
        expanded = [
            a.replace("$(LWS_WORKER_INDEX)", index).replace("$(LWS_LEADER_ADDRESS)", "big-3.big-3.models")
            for a in container["args"]
        ]  # fmt: skip
        parsed[role] = launcher.parse_vllm_args(cli.parse_command_line(expanded))
    leader, worker = parsed["leaderTemplate"], parsed["workerTemplate"]
    for args in (leader, worker):
        assert (args.nnodes, args.master_addr, args.master_port) == (2, "big-3.big-3.models", 29500)
        assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (2, 2)
        assert args.distributed_executor_backend == "mp"
    assert (leader.node_rank, leader.headless) == (0, False)
    assert (worker.node_rank, worker.headless) == (1, True)
