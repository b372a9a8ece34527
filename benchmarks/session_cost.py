"""Per-request and per-byte cost of mio's session layer, in one process.

Client and server sessions on loopback TCP in one process: what mio itself costs per
request, round trip or bulk write, without a second process competing for the cores.

    python benchmarks/session_cost.py [--loop asyncio|uvloop]     # CPU seconds per workload
    python benchmarks/session_cost.py --one rpc --size 2000         # one workload (for callgrind)

``benchmarks/instructions.sh`` runs ``--one`` under valgrind's callgrind at two sizes and
prints the marginal instruction count per unit: a deterministic figure to compare two
versions of mio (run it once per installed version).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import mio


async def _echo(stream: mio.Stream) -> None:
    async for chunk in stream:
        await stream.send(chunk)


async def _sink(stream: mio.Stream) -> None:
    total = 0
    async for chunk in stream:
        total += len(chunk)
    await stream.send(b"%d" % total)


async def _pair(handler: Callable[[mio.Stream], Awaitable[None]]) -> tuple[mio.Server, mio.Session]:
    server = await mio.serve(handler, "127.0.0.1", 0)
    client = await mio.connect("127.0.0.1", server.port)
    return server, client


async def _done(server: mio.Server, client: mio.Session) -> None:
    client.close()
    await client.wait_closed()
    server.close()
    await server.wait_closed()


async def bulk(size: int) -> None:
    """``size`` writes of 64 KiB on one stream into a counting sink."""
    server, client = await _pair(_sink)
    data = b"x" * 65536
    stream = await client.open_stream()
    for _ in range(size):
        stream.write(data)
        await stream.drain()
    stream.write_eof()
    assert int(await stream.read()) == size * 65536
    await _done(server, client)


async def rpc(size: int, workers: int = 64) -> None:
    """``size`` requests of 32 bytes, each on a new stream, by 64 concurrent workers (W2)."""
    server, client = await _pair(_echo)

    async def worker(count: int) -> None:
        for _ in range(count):
            stream = await client.open_stream()
            stream.write(b"ping" * 8)
            stream.write_eof()
            assert await stream.read() == b"ping" * 8

    await asyncio.gather(*(worker(size // workers) for _ in range(workers)))
    await _done(server, client)


async def streams(size: int, rounds: int = 5) -> None:
    """``size`` concurrent streams x 5 round trips of 16 bytes (W3)."""
    server, client = await _pair(_echo)
    opened = [await client.open_stream() for _ in range(size)]

    async def one(stream: mio.Stream) -> None:
        for _ in range(rounds):
            stream.write(b"0123456789abcdef")
            await stream.readexactly(16)
        stream.write_eof()
        await stream.read()

    await asyncio.gather(*(one(s) for s in opened))
    await _done(server, client)


async def _system_client(system: str) -> tuple[object, object]:
    from mio._bench.systems import SYSTEMS, load

    module = load(SYSTEMS[system])
    ports = await module.serve({}, {}, False)
    client = module.Client(ports, {}, SYSTEMS[system].variant)
    await client.connect("echo")
    return module, client


async def system_rpc(system: str, size: int) -> None:
    """W2 through the end-to-end benchmark's own client and server of ``system``."""
    from mio._bench.workloads import _rpc_phase

    _, client = await _system_client(system)
    lat, bad = await _rpc_phase(client, size, 64)  # type: ignore[arg-type]
    assert bad == 0
    assert len(lat) == size
    await client.close()  # type: ignore[attr-defined]


async def system_streams(system: str, size: int, rounds: int = 5) -> None:
    """W3 (``size`` streams x 5 round trips) through the benchmark's client of ``system``."""
    from mio._bench.common import echo_msg

    _, client = await _system_client(system)

    async def one(i: int) -> None:
        stream = await client.open_echo(i)  # type: ignore[attr-defined]
        for j in range(rounds):
            msg = echo_msg(i, j)
            assert await stream.roundtrip(msg) == msg
        assert await stream.finish()

    await asyncio.gather(*(one(i) for i in range(size)))
    await client.close()  # type: ignore[attr-defined]


WORKLOADS = {"bulk": (bulk, 4096), "rpc": (rpc, 20000), "streams": (streams, 2000)}
#: ``--system``: the same W2/W3 code for mio and raw TCP (b), from the end-to-end benchmark
SYSTEM_WORKLOADS = {"rpc": system_rpc, "streams": system_streams}


async def _timed() -> dict[str, float]:
    out = {}
    for name, (func, size) in WORKLOADS.items():
        start = time.process_time()
        await func(size)
        out[name] = time.process_time() - start
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--one", choices=list(WORKLOADS), help="run one workload, print nothing")
    ap.add_argument("--size", type=int, default=0, help="its size (with --one)")
    ap.add_argument("--rounds", type=int, default=5, help="round trips per stream (--one streams)")
    ap.add_argument(
        "--system",
        choices=["mio", "mio-cb", "tcp-b", "tcp-task"],
        default=None,
        help="with --one rpc|streams: run the end-to-end benchmark's client and server of "
        "this system in one process (mio-pure: --system mio with MIO_NO_EXTENSIONS=1)",
    )
    args = ap.parse_args()
    runner: Callable[..., object] = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    if args.one and args.system:
        if args.one not in SYSTEM_WORKLOADS:
            ap.error("--system works with --one rpc or --one streams")
        size = args.size or WORKLOADS[args.one][1]
        if args.one == "streams":
            runner(system_streams(args.system, size, args.rounds))
        else:
            runner(SYSTEM_WORKLOADS[args.one](args.system, size))
        return
    if args.one:
        func, size = WORKLOADS[args.one]
        if args.one == "streams":
            runner(streams(args.size or size, args.rounds))
        else:
            runner(func(args.size or size))
        return
    result = runner(_timed())
    print(
        f"mio {mio.__version__} (compiled: {mio.EXTENSIONS_ACTIVE}), {args.loop}: "
        + ", ".join(f"{k} {v:.3f} s CPU" for k, v in result.items())  # type: ignore[union-attr]
    )


if __name__ == "__main__":
    main()
