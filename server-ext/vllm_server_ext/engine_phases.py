"""Startup phases reported from the engine process.

Memory profiling, KV cache allocation and warm-up happen inside vLLM's engine core, usually in a
child process the API process cannot see into. `engine_plugin` (a `vllm.general_plugins` entry
point, loaded by vLLM in every process it starts) sends the phase names as datagrams to a Linux
abstract-namespace UNIX socket whose name the launcher puts in the environment; the children
inherit it. Fire and forget: a lost datagram only makes the phases coarser.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

from .lifecycle import Phase, ServerState

# Not VLLM_-prefixed: vLLM warns about environment variables of its prefix it does not know.
PHASE_SOCKET_ENV = "SERVER_EXT_PHASE_SOCKET"


def _socket_name(address: str) -> str:
    return "\0" + address[1:] if address.startswith("@") else address


class PhaseReceiver:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        # "@name" in the environment (which cannot hold NUL), "\0name" on the socket.
        self.address = f"@vllm-ext-phases-{state.instance_id}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(_socket_name(self.address))
        self._thread = threading.Thread(target=self._receive, name="vllm-ext-phases", daemon=True)

    def start(self) -> PhaseReceiver:
        self._thread.start()
        return self

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv(64)
            except OSError:
                return  # closed by stop()
            try:
                self.state.enter(Phase(data.decode()))
            except ValueError:
                continue

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def report(phase: Phase) -> None:
    """Send `phase` to the launcher, if this process was started by one."""
    address = os.environ.get(PHASE_SOCKET_ENV)
    if not address:
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(phase.value.encode(), _socket_name(address))
    except OSError:
        pass
