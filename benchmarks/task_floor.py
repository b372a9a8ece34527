"""The floor of a coroutine-per-stream server on asyncio, for W3 (round trips on many streams).

Raw TCP (b)'s own framing (``[u32 len][u32 id]`` frames on one connection, writes coalesced
once per loop iteration) with one change on the server: every stream id is served by its own
coroutine, woken through a future per message, as any server with a coroutine (task) per
stream must be (mio's ``Stream`` API, h2/aioquic servers written with tasks). No flow
control, no stream objects, no window or memory accounting: nothing a multiplexer could drop.

    python benchmarks/task_floor.py --server task --streams 200 --rounds 25
    python benchmarks/task_floor.py --server callback ...   # raw TCP (b): answers in data_received

``benchmarks/instructions.sh`` counts its instructions per round trip next to mio's and raw
TCP (b)'s: the ratio raw TCP (b) ÷ this floor bounds what any coroutine-per-stream server
reaches against raw TCP (b) on W3.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import struct
from typing import Any

HDR = struct.Struct("!II")  # payload length, stream id


class _Coalescing(asyncio.Protocol):
    """Frames out: appended to one buffer, written once per loop iteration."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.out = bytearray()
        self.flush_scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def send(self, sid: int, payload: bytes) -> None:
        self.out += HDR.pack(len(payload), sid)
        self.out += payload
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.out:
            self.t.write(bytes(self.out))
            self.out.clear()

    def frames(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf
        buf += data
        off, n, out = 0, len(buf), []
        while n - off >= 8:
            ln, sid = HDR.unpack_from(buf, off)
            end = off + 8 + ln
            if end > n:
                break
            out.append((sid, bytes(buf[off + 8 : end])))
            off = end
        if off:
            del buf[:off]
        return out


class TaskServer(_Coalescing):
    """One coroutine per stream id, woken by a future per message."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: dict[int, list[Any]] = {}  # sid -> [waiter future or None, deque]

    async def serve(self, sid: int, state: list[Any]) -> None:
        inbox: collections.deque[bytes] = state[1]
        while True:
            while not inbox:
                state[0] = fut = self.loop.create_future()
                await fut
            self.send(sid, inbox.popleft())

    def data_received(self, data: bytes) -> None:
        for sid, payload in self.frames(data):
            state = self.streams.get(sid)
            if state is None:
                state = self.streams[sid] = [None, collections.deque()]
                self.loop.create_task(self.serve(sid, state))
            state[1].append(payload)
            w = state[0]
            if w is not None:
                state[0] = None
                w.set_result(None)


class CallbackServer(_Coalescing):
    """Raw TCP (b): every frame answered inside ``data_received``."""

    def data_received(self, data: bytes) -> None:
        for sid, payload in self.frames(data):
            self.send(sid, payload)


class Client(_Coalescing):
    """Raw TCP (b)'s client: a future per request, resolved by id."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, asyncio.Future[bytes]] = {}

    def request(self, sid: int, payload: bytes) -> asyncio.Future[bytes]:
        fut = self.pending[sid] = self.loop.create_future()
        self.send(sid, payload)
        return fut

    def data_received(self, data: bytes) -> None:
        for sid, payload in self.frames(data):
            self.pending.pop(sid).set_result(payload)


async def run(server: str, streams: int, rounds: int) -> None:
    loop = asyncio.get_running_loop()
    factory = TaskServer if server == "task" else CallbackServer
    srv = await loop.create_server(factory, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    transport, client = await loop.create_connection(Client, "127.0.0.1", port)

    async def one(i: int) -> None:
        for j in range(rounds):
            msg = b"Aa %d-%d" % (i, j)
            if await client.request(i, msg) != msg:
                raise AssertionError(f"stream {i}: wrong echo")

    await asyncio.gather(*(one(i) for i in range(streams)))
    transport.close()
    srv.close()
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", choices=["task", "callback"], default="task")
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = ap.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args.server, args.streams, args.rounds))
    else:
        asyncio.run(run(args.server, args.streams, args.rounds))


if __name__ == "__main__":
    main()
