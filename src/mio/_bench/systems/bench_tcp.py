"""Raw asyncio TCP baselines (``asyncio.Protocol`` API, default loop or uvloop).

Variant ``conn`` (raw TCP (a)): W2 opens a new TCP connection per request (64 bytes, then
half-close; the server echoes and closes on EOF), W3 opens 1000 connections (one per stream).
Variant ``pipe`` (raw TCP (b)): W2/W3 share one connection carrying ``[u32 len][u32 id]``
frames, writes coalesced once per loop iteration: what hand-written multiplexing of
requests over one asyncio connection costs, with no flow control, no per-stream state.
Variant ``task`` (raw TCP (b) + tasks): the same framing, but the server serves every stream
id with its own coroutine (task), woken through a future per frame, as any server with a
coroutine per stream must be (mio's ``Stream`` API): the floor of that design, not a
target. The high bit of the id marks a stream's last frame (W2's request, W3's finish).
W1 (both): one plain connection, 64 KiB writes with ``pause_writing`` backpressure (the
client's write strategy is mio's: the chunk handed to the transport as is, wait while the
transport is paused), half-close; the server reads with ``BufferedProtocol`` into a 256 KiB
buffer (as mio does) and acknowledges the count.
"""

from __future__ import annotations

import asyncio
import collections
import struct
import zlib
from typing import Any

from ...config import Config
from .. import common as C

DEFAULT_OPTS: dict[str, Any] = {}
HDR = struct.Struct("!II")  # payload length, request id
END = 0x80000000  # id bit of the ``task`` variant: the last frame of its stream


# ---------------------------------------------------------------------------- server side
class BulkServer(asyncio.BufferedProtocol):
    """W1 sink: the best bulk receive asyncio offers, and the one mio uses.

    ``BufferedProtocol``: the loop ``recv_into``s a preallocated 256 KiB buffer (mio's read
    buffer size), no ``bytes`` object per read, where ``data_received`` allocates one per
    read. So W1 compares mio's framing, flow control and stream delivery against the
    transport alone, not against a slower way of reading it.
    """

    def __init__(self, stats: dict[str, Any], verify: bool) -> None:
        self.stats, self.verify = stats, verify
        self.n = 0
        self.crc = 0
        self.buf = bytearray(256 * 1024)
        self.view = memoryview(self.buf)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.n += nbytes
        if self.verify:
            self.crc = zlib.crc32(self.view[:nbytes], self.crc)

    def eof_received(self) -> bool:
        self.stats["bulk_bytes"] = self.stats.get("bulk_bytes", 0) + self.n
        self.t.write(C.ACK.pack(self.n, self.crc))
        self.t.close()
        return True


class EchoServer(asyncio.Protocol):
    """Echo everything; close once the client half-closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.t.write(data)

    def eof_received(self) -> bool:
        return False  # the transport closes itself once the echo is written


class FramedEchoServer(asyncio.Protocol):
    """Parse ``[len][id][payload]`` frames, answer each one (one write per read)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        off, n, out = 0, len(buf), bytearray()
        while n - off >= 8:
            ln, _ = HDR.unpack_from(buf, off)
            end = off + 8 + ln
            if end > n:
                break
            out += buf[off:end]
            off = end
        if off:
            del buf[:off]
        if out:
            self.t.write(out)


class FramedTaskEchoServer(asyncio.Protocol):
    """``[len][id][payload]`` frames, every stream id served by its own task: the task
    waits on a future until its inbox has a frame, echoes it (replies coalesced once per
    loop iteration) and returns after the frame marked ``END``."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.out = bytearray()
        self.flush_scheduled = False
        # id -> [waiter future or None, inbox of (payload, end), task]
        self.streams: dict[int, list[Any]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def _send(self, sid: int, payload: bytes) -> None:
        self.out += HDR.pack(len(payload), sid)
        self.out += payload
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.out and not self.t.is_closing():
            self.t.write(bytes(self.out))
            self.out.clear()

    async def _serve(self, sid: int, state: list[Any]) -> None:
        inbox: collections.deque[tuple[bytes, bool]] = state[1]
        while True:
            while not inbox:
                state[0] = fut = self.loop.create_future()
                await fut
            payload, end = inbox.popleft()
            self._send(sid, payload)
            if end:
                del self.streams[sid]
                return

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        off, n = 0, len(buf)
        while n - off >= 8:
            ln, raw = HDR.unpack_from(buf, off)
            end = off + 8 + ln
            if end > n:
                break
            sid = raw & ~END
            state = self.streams.get(sid)
            if state is None:
                state = self.streams[sid] = [None, collections.deque(), None]
                state[2] = self.loop.create_task(self._serve(sid, state))
            state[1].append((bytes(buf[off + 8 : end]), bool(raw & END)))
            w = state[0]
            if w is not None:
                state[0] = None
                w.set_result(None)
            off = end
        if off:
            del buf[:off]

    def connection_lost(self, exc: Exception | None) -> None:
        for state in self.streams.values():
            state[2].cancel()
        self.streams.clear()


async def serve(opts: dict[str, Any], stats: dict[str, Any], verify: bool) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    factories = {
        "bulk": lambda: BulkServer(stats, verify),
        "echo": EchoServer,
        "framed": FramedEchoServer,
        "framed-task": FramedTaskEchoServer,
    }
    ports = {}
    for kind, factory in factories.items():
        srv = await loop.create_server(factory, C.HOST, 0, backlog=4096)
        ports[kind] = srv.sockets[0].getsockname()[1]
    return ports


# ---------------------------------------------------------------------------- client side
class BulkClient(asyncio.Protocol):
    """W1 source: ``write`` + wait for ``resume_writing``, with the transport's high-water
    mark at mio's own (``Config.write_buffer_high``, 1 MiB) so both queue as much ahead."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[bytes] = loop.create_future()
        self.buf = bytearray()
        self.paused = False
        self.resume: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.t.set_write_buffer_limits(high=Config().write_buffer_high)

    def pause_writing(self) -> None:
        self.paused = True
        self.resume = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self.paused = False
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(bytes(self.buf))
        self.resume_writing()

    async def write(self, chunk: bytes) -> None:
        self.t.write(chunk)
        if self.paused and self.resume is not None:
            await self.resume

    async def finish(self) -> tuple[int, int]:
        self.t.write_eof()
        ack = await self.done
        if len(ack) != C.ACK.size:
            return -1, 0
        n, crc = C.ACK.unpack(ack)
        return n, crc


class OneShot(asyncio.Protocol):
    """W2 (a): send the request, half-close, collect the answer until the server closes."""

    def __init__(self, payload: bytes, fut: asyncio.Future[bytes]) -> None:
        self.payload, self.fut = payload, fut
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t: asyncio.Transport = transport  # type: ignore[assignment]
        t.write(self.payload)
        t.write_eof()

    def data_received(self, data: bytes) -> None:
        self.buf += data

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.fut.done():
            self.fut.set_result(bytes(self.buf))


class EchoConn(asyncio.Protocol):
    """W3 (a): one connection per stream."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.want = 0
        self.waiter: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and len(self.buf) >= self.want:
            self.waiter.set_result(None)
            self.waiter = None

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    async def roundtrip(self, msg: bytes) -> bytes:
        self.t.write(msg)
        n = len(msg)
        if len(self.buf) < n:
            self.want = n
            self.waiter = self.loop.create_future()
            await self.waiter
        resp = bytes(self.buf[:n])
        del self.buf[:n]
        return resp

    async def finish(self) -> bool:
        self.t.write_eof()
        await self.lost
        return not self.buf


class FramedClient(asyncio.Protocol):
    """One connection, request-id multiplexing, writes coalesced per loop iteration."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.buf = bytearray()
        self.out = bytearray()
        self.flush_scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]

    def request(self, rid: int, payload: bytes, end: bool = False) -> asyncio.Future[bytes]:
        fut = self.loop.create_future()
        self.pending[rid] = fut
        self.out += HDR.pack(len(payload), rid | END if end else rid)
        self.out += payload
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.out:
            self.t.write(bytes(self.out))
            self.out.clear()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        off, n = 0, len(buf)
        while n - off >= 8:
            ln, rid = HDR.unpack_from(buf, off)
            end = off + 8 + ln
            if end > n:
                break
            self.pending.pop(rid).set_result(bytes(buf[off + 8 : end]))
            off = end
        if off:
            del buf[:off]

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))


class _PipeEcho:
    def __init__(self, conn: FramedClient, i: int, ends: bool) -> None:
        self.conn, self.i, self.ends = conn, i, ends

    async def roundtrip(self, msg: bytes) -> bytes:
        return await self.conn.request(self.i, msg)

    async def finish(self) -> bool:
        if self.ends:  # the task variant: an empty END frame ends the server's task
            return await self.conn.request(self.i, b"", end=True) == b""
        return True  # ids need no closing


class Client:
    def __init__(self, ports: dict[str, int], opts: dict[str, Any], variant: str) -> None:
        if variant not in ("conn", "pipe", "task"):
            raise ValueError(f"raw TCP variant {variant!r}")
        self._ports = ports
        self._pipe = variant in ("pipe", "task")
        self._tasks = variant == "task"
        self._transport: asyncio.Transport | None = None
        self._framed: FramedClient | None = None
        self._kind = ""

    async def connect(self, kind: str) -> None:
        self._kind = kind
        if self._pipe and kind == "echo":
            loop = asyncio.get_running_loop()
            port = self._ports["framed-task" if self._tasks else "framed"]
            t, p = await loop.create_connection(FramedClient, C.HOST, port)
            self._transport, self._framed = t, p

    async def open_bulk(self) -> BulkClient:
        loop = asyncio.get_running_loop()
        _, p = await loop.create_connection(BulkClient, C.HOST, self._ports["bulk"])
        return p

    async def request(self, i: int, payload: bytes) -> bytes:
        if self._framed is not None:
            return await self._framed.request(i, payload, end=self._tasks)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        await loop.create_connection(lambda: OneShot(payload, fut), C.HOST, self._ports["echo"])
        return await fut

    async def open_echo(self, i: int) -> EchoConn | _PipeEcho:
        if self._framed is not None:
            return _PipeEcho(self._framed, i, self._tasks)
        loop = asyncio.get_running_loop()
        _, p = await loop.create_connection(EchoConn, C.HOST, self._ports["echo"])
        return p

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def stats(self) -> dict[str, Any]:
        return {}
