"""The systems compared, their optional dependencies and the workloads each one runs."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from types import ModuleType

__all__ = ("SYSTEMS", "System", "missing", "load")


@dataclasses.dataclass(frozen=True)
class System:
    """One system: a client/server implementation of the workloads."""

    name: str
    label: str
    module: str  # module of this package with ``serve`` and ``Client``
    variant: str  # handed to the module (raw TCP: "conn" or "pipe")
    workloads: tuple[str, ...]
    requires: tuple[str, ...] = ()  # importable modules
    env: tuple[tuple[str, str], ...] = ()  # environment of both child processes
    description: str = ""


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System(
            "mio",
            "mio",
            "bench_mio",
            "",
            ("W1", "W2", "W3", "W4"),
            requires=("mio._frame", "mio._window"),
            env=(("MIO_NO_EXTENSIONS", "0"),),
            description="mio with its compiled codec (mio.serve / mio.connect, default Config)",
        ),
        System(
            "mio-cb",
            "mio (callbacks)",
            "bench_mio",
            "cb",
            ("W2", "W3"),
            requires=("mio._frame", "mio._window"),
            env=(("MIO_NO_EXTENSIONS", "0"),),
            description="mio, the server on the callback API (mio.StreamProtocol: no task "
            "and no future per stream); the client as for mio",
        ),
        System(
            "mio-pure",
            "mio-pure",
            "bench_mio",
            "",
            ("W1", "W2", "W3", "W4"),
            env=(("MIO_NO_EXTENSIONS", "1"),),
            description="mio with the pure-Python codec (MIO_NO_EXTENSIONS=1 in both processes)",
        ),
        System(
            "tcp-a",
            "raw TCP (a)",
            "bench_tcp",
            "conn",
            ("W2", "W3"),
            description=(
                "raw asyncio TCP, one connection per request (W2) / 1000 connections (W3); "
                "same half-close protocol as the mio streams"
            ),
        ),
        System(
            "tcp-b",
            "raw TCP (b)",
            "bench_tcp",
            "pipe",
            ("W1", "W2", "W3"),
            description=(
                "raw asyncio TCP: W1 one plain connection; W2/W3 one pipelined connection "
                "with [len][id] frames (the ceiling for any multiplexer over asyncio)"
            ),
        ),
        System(
            "tcp-task",
            "raw TCP (b) + tasks",
            "bench_tcp",
            "task",
            ("W2", "W3"),
            description=(
                "raw TCP (b)'s framing with a task per stream on the server, woken by a "
                "future per message: the floor of a coroutine-per-stream server (a "
                "reference, not a target)"
            ),
        ),
        System(
            "h2",
            "h2",
            "bench_h2",
            "",
            ("W1", "W2", "W3", "W4"),
            requires=("h2",),
            description="HTTP/2 streams (h2c) with the sans-IO h2 library on asyncio.Protocol",
        ),
        System(
            "quic",
            "aioquic",
            "bench_quic",
            "",
            ("W1", "W2", "W3", "W4"),
            requires=("aioquic", "cryptography"),
            description="QUIC streams with aioquic over loopback UDP (TLS 1.3)",
        ),
        System(
            "mio-quic",
            "mio.quic",
            "bench_mio_quic",
            "",
            ("W1", "W2", "W3", "W4"),
            requires=("aioquic", "cryptography"),
            description=(
                "mio's stream API over QUIC (mio.quic on aioquic, loopback UDP, TLS 1.3): "
                "what switching the transport costs"
            ),
        ),
    )
}


def missing(system: System) -> str | None:
    """Why ``system`` cannot run here, or None."""
    for name in system.requires:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:
            found = False
        if not found:
            if name.startswith("mio."):
                return "mio's compiled extensions are not built (pure-Python install)"
            return f"module {name!r} is not installed (pip install 'mio-mux[bench]')"
    return None


def load(system: System) -> ModuleType:
    """The implementation module of ``system``."""
    return importlib.import_module(f"{__name__}.{system.module}")
