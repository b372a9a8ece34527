"""Shared pieces of the end-to-end benchmark: sizes, payloads, CPU meter, loop selection."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import struct
import sys
import time
import zlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

#: Every bulk write is one 64 KiB chunk.
BULK_CHUNK = 64 * 1024
#: W2/W4 request (and response) size.
RPC_SIZE = 64
#: Bulk acknowledgement sent by every server when the bulk stream ends: byte count, CRC-32
#: (0 unless the server was started with ``--verify-content``).
ACK = struct.Struct("!QI")
#: The loopback address every system listens on.
HOST = "127.0.0.1"
LOOPS = ("asyncio", "uvloop")


@dataclasses.dataclass(frozen=True)
class Totals:
    """How much work each workload does; the full preset is the one the targets refer to."""

    bulk_bytes: int = 256 * 1024 * 1024
    rpc_requests: int = 20_000
    rpc_workers: int = 64
    echo_streams: int = 1000
    echo_roundtrips: int = 100
    fair_requests: int = 20_000
    fair_workers: int = 8
    #: W4: seconds (at most) the bulk stream runs before the second rpc phase starts
    fair_lead_s: float = 1.0
    #: W1: stop early (half-close) after this many seconds; None = always send ``bulk_bytes``
    bulk_max_s: float | None = None
    #: repeat the workload (fresh connections each time) until this much timed work is done,
    #: and report the median repetition: CPU figures and medians need seconds, not ticks
    min_timed_s: float = 2.0
    #: at most this many repetitions per run (start-up-dominated tiny runs)
    max_reps: int = 50
    timeout: float = 55.0

    @property
    def bulk_chunks(self) -> int:
        return max(1, self.bulk_bytes // BULK_CHUNK)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, Totals] = {
    # the definition of W1-W4; the targets refer to these
    "full": Totals(),
    # the whole default matrix (7 systems, 4 workloads, 2 loops, 3 rounds) in about 90 s on 2 cores
    "quick": Totals(
        bulk_bytes=128 * 1024 * 1024,
        bulk_max_s=0.4,
        rpc_requests=1_500,
        echo_streams=1000,
        echo_roundtrips=5,
        fair_requests=600,
        fair_lead_s=0.2,
        min_timed_s=0.0,
        timeout=20.0,
    ),
    # a few seconds for one system: the CLI's test-only smoke mode and worker warm-up
    "smoke": Totals(
        bulk_bytes=1024 * 1024,
        rpc_requests=200,
        rpc_workers=16,
        echo_streams=50,
        echo_roundtrips=4,
        fair_requests=100,
        fair_lead_s=0.1,
        min_timed_s=0.0,
        timeout=15.0,
    ),
}


def bulk_chunks() -> list[bytes]:
    """16 distinct pseudo-random 64 KiB chunks; chunk ``i`` of a transfer is ``[i % 16]``."""
    rnd = random.Random(1234)
    return [rnd.randbytes(BULK_CHUNK) for _ in range(16)]


def bulk_crc(chunks: list[bytes], count: int) -> int:
    """CRC-32 of a transfer of ``count`` chunks."""
    crc = 0
    for i in range(count):
        crc = zlib.crc32(chunks[i & 15], crc)
    return crc


def rpc_payload(i: int) -> bytes:
    """64-byte request payload, unique per request id."""
    return ((b"req-%08d-" % i) * 8)[:RPC_SIZE]


def echo_msg(i: int, j: int) -> bytes:
    """Round trip ``j`` of W3 stream ``i``."""
    return b"Aa %d-%d" % (i, j)


def percentile(sorted_vals: list[int], p: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    k = round(p / 100.0 * len(sorted_vals) + 0.5) - 1
    return sorted_vals[max(0, min(len(sorted_vals) - 1, k))]


def latency_summary(lat_ns: list[int], prefix: str = "") -> dict[str, float]:
    """p50/p99/max in microseconds."""
    if not lat_ns:
        return {}
    s = sorted(lat_ns)
    return {
        f"{prefix}p50_us": round(percentile(s, 50) / 1000, 1),
        f"{prefix}p99_us": round(percentile(s, 99) / 1000, 1),
        f"{prefix}max_us": round(s[-1] / 1000, 1),
    }


# ---------------------------------------------------------------------------- event loops
def resolve_loop(name: str) -> str:
    """``auto`` is uvloop where it can be used, else asyncio; other names are kept."""
    if name == "auto":
        return "uvloop" if loop_available("uvloop") is None else "asyncio"
    return name


def loop_available(name: str) -> str | None:
    """None if the event loop ``name`` can be used here, else why not."""
    if name in ("asyncio", "auto"):
        return None
    if name == "uvloop":
        if sys.platform == "win32":
            return "uvloop does not support Windows"
        import importlib.util

        if importlib.util.find_spec("uvloop") is None:
            return "uvloop is not installed (pip install 'mio-mux[bench]')"
        return None
    return f"unknown event loop {name!r}"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new event loop of kind ``name`` (``asyncio``, ``uvloop``, ``auto``)."""
    name = resolve_loop(name)
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"unknown event loop {name!r}")


def run_in_loop(name: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion in a fresh event loop of kind ``name``."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main())


# ---------------------------------------------------------------------------- CPU accounting
def optional_module(name: str) -> Any:
    """The module ``name``, or None if it is not installed."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None


class Meter:
    """Wall clock and CPU of the client (this process) and the server for the timed region.

    CPU times come from ``time.process_time()`` (``CLOCK_PROCESS_CPUTIME_ID``: nanosecond
    resolution, not the 10 ms ticks of ``/proc``): the client reads its own, and asks the
    server for its own over the server's ``cpu`` control port (one loopback round trip
    before the timed region starts and one after it ends). Without a control port the server
    is read from ``/proc`` through psutil (10 ms ticks).

    Also estimates the CPU used by *other* processes meanwhile (the machine may be shared):
    ``foreign_cpu_pct`` from the system-wide counters (includes loopback softirq work that
    the kernel charges to nobody), ``foreign_proc_pct`` from a per-process scan (both need
    psutil).
    """

    def __init__(self, server_pid: int = 0, ours: Iterable[int] = (), cpu_port: int = 0) -> None:
        psutil = optional_module("psutil")
        self._psutil: Any = psutil
        self._cpu_port = cpu_port
        self._srv: Any = None
        if psutil and server_pid and not cpu_port:
            try:
                self._srv = psutil.Process(server_pid)
            except psutil.Error:
                self._srv = None
        self._ours = {os.getpid(), server_pid, os.getppid(), *ours}
        self.t0: float | None = None
        self.t1: float | None = None
        self._c0 = self._c1 = self._s0 = self._s1 = 0.0
        self._y0 = self._y1 = self._st0 = self._st1 = 0.0
        self._o0: dict[int, tuple[float, float]] = {}
        self._foreign_proc = 0.0

    @property
    def has_server(self) -> bool:
        return bool(self._cpu_port) or self._srv is not None

    def _cpu_self(self) -> float:
        return time.process_time()

    def _cpu_srv(self) -> float:
        if self._cpu_port:
            return query_cpu(self._cpu_port)
        if self._srv is None:
            return 0.0
        try:
            c = self._srv.cpu_times()
        except Exception:
            return 0.0
        return float(c.user + c.system)

    def _sys(self) -> tuple[float, float]:
        if self._psutil is None:
            return 0.0, 0.0
        c = self._psutil.cpu_times()
        busy = c.user + c.nice + c.system + getattr(c, "irq", 0.0) + getattr(c, "softirq", 0.0)
        return float(busy), float(getattr(c, "steal", 0.0))

    def _others(self) -> dict[int, tuple[float, float]]:
        if self._psutil is None:
            return {}
        snap = {}
        for p in self._psutil.process_iter(["pid", "ppid", "create_time", "cpu_times"]):
            i = p.info
            if i["pid"] in self._ours or i["pid"] == 2 or i["ppid"] == 2 or not i["cpu_times"]:
                continue
            snap[i["pid"]] = (i["create_time"], i["cpu_times"].user + i["cpu_times"].system)
        return snap

    def start(self) -> None:
        self._o0 = self._others()
        self._c0 = self._cpu_self()
        self._s0 = self._cpu_srv()
        self._y0, self._st0 = self._sys()
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.t1 = time.perf_counter()
        self._c1 = self._cpu_self()
        self._s1 = self._cpu_srv()
        self._y1, self._st1 = self._sys()
        foreign = 0.0
        for pid, (created, cpu) in self._others().items():
            prev = self._o0.get(pid)
            foreign += cpu - prev[1] if prev and prev[0] == created else cpu
        self._foreign_proc = foreign

    @property
    def elapsed(self) -> float:
        assert self.t0 is not None, "meter not started"
        assert self.t1 is not None, "meter not stopped"
        return max(self.t1 - self.t0, 1e-9)

    def report(self) -> dict[str, Any]:
        el = self.elapsed
        client = self._c1 - self._c0
        server = self._s1 - self._s0
        out: dict[str, Any] = {
            "elapsed_s": round(el, 4),
            "cpu_client_s": round(client, 4),
            "cpu_client_pct": round(100 * client / el, 1),
        }
        if self.has_server:
            out["cpu_server_s"] = round(server, 4)
            out["cpu_server_pct"] = round(100 * server / el, 1)
        if self._psutil is not None:
            out["foreign_cpu_pct"] = round(100 * ((self._y1 - self._y0) - client - server) / el, 1)
            out["steal_pct"] = round(100 * (self._st1 - self._st0) / el, 1)
            out["foreign_proc_pct"] = round(100 * self._foreign_proc / el, 1)
        return out


#: The server's answer on its ``cpu`` control port: its ``time.process_time()``.
CPU_REPLY = struct.Struct("!d")


def query_cpu(port: int) -> float:
    """The CPU seconds the server process has used so far (blocking loopback round trip)."""
    import socket

    with socket.create_connection((HOST, port), timeout=5.0) as sock:
        data = b""
        while len(data) < CPU_REPLY.size:
            chunk = sock.recv(CPU_REPLY.size - len(data))
            if not chunk:
                raise ConnectionError("cpu control port closed before answering")
            data += chunk
    return float(CPU_REPLY.unpack(data)[0])


async def serve_cpu() -> int:
    """Listen on the ``cpu`` control port (this process's CPU seconds, then close); its port."""

    def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CPU_REPLY.pack(time.process_time()))
        writer.close()

    server = await asyncio.start_server(answer, HOST, 0)
    return int(server.sockets[0].getsockname()[1])


def busy_pct(interval: float = 0.5) -> float | None:
    """System-wide busy CPU over ``interval`` seconds, in % of one core (None without psutil)."""
    psutil = optional_module("psutil")
    if psutil is None:
        return None
    a = psutil.cpu_times()
    time.sleep(interval)
    b = psutil.cpu_times()
    return float(100 * ((b.user + b.nice + b.system) - (a.user + a.nice + a.system)) / interval)


def to_int(value: str) -> int:
    """``"1048576"``, ``"0x100000"``, ``"1M"``, ``"64K"`` → int (K/M/G: powers of 1024)."""
    text = value.strip().lower()
    for suffix, mult in (("k", 1024), ("m", 1024**2), ("g", 1024**3)):
        if text.endswith(suffix):
            return int(text[:-1], 0) * mult
    return int(text, 0)


def merge_opts(system: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given`` (strings from ``--opt``), converted to the defaults'
    types; an unknown key is an error."""
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise ValueError(f"{system}: unknown option {key!r} (known: {known})")
        default = defaults[key]
        if isinstance(value, str):
            if isinstance(default, bool):
                value = value.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                value = to_int(value)
            elif isinstance(default, float):
                value = float(value)
        out[key] = value
    return out
