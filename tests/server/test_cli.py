"""Command-line handling, all before vLLM is imported."""

import base64
import errno
import re
import socket
import subprocess
import sys

import pytest

from vllm_server_ext import cli
from vllm_testkit.servers import run_cli


def test_positional_model_and_our_flags_are_split_from_vllms():
    inv = cli.parse_command_line(
        ["/models/m", "--log-format", "json", "--max-model-len", "512", "--port", "9001"]
    )
    assert inv.options.log_format == "json"
    assert inv.vllm_argv == ["--model", "/models/m", "--max-model-len", "512", "--port", "9001"]
    assert (inv.host, inv.port, inv.uds) == ("", 9001, None)


def test_defaults_match_vllm_serve():
    inv = cli.parse_command_line(["--model", "m", "--host=127.0.0.1", "--log_format=text"])
    assert (inv.host, inv.port) == ("127.0.0.1", 8000)
    assert inv.vllm_argv == ["--model", "m", "--host=127.0.0.1"]


def test_bad_value_of_our_flag_is_one_line_naming_flag_and_choices():
    result = run_cli("m", "--log-format", "xml")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--log-format" in lines[0]
    assert "'text', 'json'" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--orca-formats", "TEXT,XML"],
            "argument --orca-formats/--orca_formats: invalid choice: 'XML' "
            "(choose from TEXT, JSON, BIN)",
        ),
        (
            ["--orca_grpc_port", "70000"],
            "argument --orca-grpc-port/--orca_grpc_port: invalid port: '70000' "
            "(choose from 1 to 65535)",
        ),
        (
            ["--orca-oob-min-interval", "0"],
            "argument --orca-oob-min-interval/--orca_oob_min_interval: invalid interval: '0' "
            "(seconds, above 0)",
        ),
    ],
)
def test_bad_orca_flags_are_one_line(args: list[str], expected: str):
    result = run_cli("m", *args)
    assert result.returncode == 2
    assert result.stderr == f"vllm-ext-serve: error: {expected}\n"


KEY = base64.b64encode(bytes(range(32))).decode()  # 32 bytes: the flag's shape


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--admin-port", "8000"], "argument --admin-port: 8000 is the API port too (--port)"),
        (["--port", "9000", "--admin_port", "9000"], "argument --admin-port: 9000 is the API port too (--port)"),
        (["--uds", "/tmp/s", "--admin-port", "8001"], "argument --admin-port: not allowed with --uds"),
        (["--admin-port", "9001", "--orca-grpc-port", "9001"], "argument --admin-port: 9001 is the ORCA gRPC port too"),
        (["--admin-port", "x"], "argument --admin-port/--admin_port: invalid port: 'x' (choose from 1 to 65535)"),
        (["--admin-port", "9001", "--admin-token-public-key", "not-base64!", "--admin-token-audience", "a/b"],
         "argument --admin-token-public-key/--admin_token_public_key: invalid key: 'not-base64!' "
         "(an Ed25519 public key: 32 bytes in base64)"),
        (["--admin-port", "9001", "--admin-token-public-key", "QUJD", "--admin-token-audience", "a/b"],
         "argument --admin-token-public-key/--admin_token_public_key: invalid key: 'QUJD' "
         "(an Ed25519 public key: 32 bytes in base64)"),
        (["--admin-token-public-key", KEY, "--admin-token-audience", "a/b"],
         "argument --admin-token-public-key: needs --admin-port"),
        (["--admin-port", "9001", "--admin-token-public-key", KEY],
         "arguments --admin-token-public-key and --admin-token-audience go together"),
        (["--admin-port", "9001", "--admin-token-audience", "a/b"],
         "arguments --admin-token-public-key and --admin-token-audience go together"),
        (["--admin-port", "9001", "--admin-token-public-key", KEY, "--admin-token-audience", ""],
         "arguments --admin-token-public-key and --admin-token-audience go together"),
        # A second key (extra arguments appended by someone) replaces nothing.
        (["--admin-port", "9001", "--admin-token-public-key", KEY, "--admin-token-audience", "a/b",
          "--admin-token-public-key", KEY],
         "argument --admin-token-public-key/--admin_token_public_key: given more than once"),
    ],
)  # fmt: skip
def test_bad_admin_port_is_one_line(args: list[str], expected: str):
    result = run_cli("m", *args)
    assert result.returncode == 2
    assert result.stderr == f"vllm-ext-serve: error: {expected}\n"


def test_orca_formats_spaces_commas_and_case():
    inv = cli.parse_command_line(["m", "--orca-formats", "json,Text", "BIN", "--max-num-seqs", "4"])
    assert inv.options.orca_formats == ("JSON", "TEXT", "BIN")
    assert inv.vllm_argv == ["--model", "m", "--max-num-seqs", "4"]
    assert cli.parse_command_line(["m"]).options.orca_formats == ()


def test_port_in_use_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("m", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"vllm-ext-serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_admin_port_in_use_is_one_line_before_vllm_is_imported():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("m", "--host", "127.0.0.1", "--port", "0", "--admin-port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"vllm-ext-serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_unsupported_vllm_version_is_refused(monkeypatch):
    monkeypatch.setattr(cli, "installed_vllm_version", lambda: "0.31.2")
    expected = "found vLLM 0.31.2; this server supports vLLM 0.32.x"
    with pytest.raises(SystemExit, match=re.escape(expected)):
        cli.check_vllm_version()


@pytest.mark.vllm  # needs vLLM installed (its version, not its import)
def test_installed_vllm_is_the_supported_one():
    version = cli.installed_vllm_version()
    assert version is not None
    assert version.startswith(cli.SUPPORTED_VLLM + ".")


def test_dual_stack_host_falls_back_to_ipv4_on_a_kernel_without_ipv6(monkeypatch):
    real_socket = socket.socket

    def no_ipv6(family=socket.AF_INET, *args, **kwargs):
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real_socket(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", no_ipv6)  # the boundary: the kernel's answer
    sock = cli.bind(cli.parse_command_line(["m", "--host", "::", "--port", "0"]))
    with sock:
        assert sock.family == socket.AF_INET and sock.getsockname()[0] == "0.0.0.0"
    with pytest.raises(OSError):  # an explicit IPv6 address stays an error
        cli.bind(cli.parse_command_line(["m", "--host", "::1", "--port", "0"]))


# --- the worker role of a multi-node replica (`--headless`) -------------------------------------

WORKER = ["--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1", "--headless"]


def test_headless_is_the_worker_role_and_passes_through_to_vllm():
    inv = cli.parse_command_line(["m", "--port", "9001", *WORKER])
    assert inv.headless is True
    assert inv.vllm_argv == ["--model", "m", "--port", "9001", *WORKER]
    assert (inv.host, inv.port) == ("", 9001)  # the early server answers there for life
    assert cli.parse_command_line(["m"]).headless is False


def test_a_worker_tolerates_the_leaders_api_flags():
    """The operator passes one argument list to both roles: the admin port, its token, the
    LoRA roots and ORCA shape the API the leader serves; a worker ignores them (the admin port
    is not even checked against --port or the ORCA port, or bound)."""
    inv = cli.parse_command_line(
        ["m", *WORKER, "--port", "8000", "--admin-port", "8000", "--admin-token-public-key", KEY,
         "--admin-token-audience", "ns/name", "--lora-allowed-roots", "/models",
         "--orca-formats", "TEXT", "--orca-grpc-port", "8000", "--orca-oob-min-interval", "2"]
    )  # fmt: skip
    assert inv.headless and inv.options.admin_port == 8000


def test_a_worker_binds_no_admin_port():
    """`--admin-port` on a port in use: the API role fails at once, the worker does not bind it
    (it goes on to import vLLM; stopped here by an unsupported vLLM version)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-c",
             "import sys; from vllm_server_ext import cli; "
             "cli.installed_vllm_version = lambda: '0.0.1'; cli.main(sys.argv[1:])",
             "m", "--host", "127.0.0.1", "--port", "0", "--admin-port", str(port), *WORKER],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "vllm-ext-serve: error: found vLLM 0.0.1; this server supports vLLM 0.32.x"
    )
