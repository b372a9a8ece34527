"""Copy bytes both ways between two connection ends, carrying half-close and resets.

An *end* is a TCP connection (:class:`TcpEnd`) or a mio stream (:class:`StreamEnd`).
:func:`pipe` runs one copy per direction:

* end of data on one side (TCP FIN, stream DATA+HFR) becomes a half-close of the other
  (``write_eof``), and the opposite direction keeps flowing;
* an error on either side (TCP reset, stream RST, session loss) or the idle timeout aborts
  both: the TCP connection is reset (RST) and the stream reset, so a truncated transfer never
  looks like a complete one;
* when both directions ended cleanly, both ends are closed gracefully.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
from typing import Protocol

from ..stream import Stream
from ..wire import ErrorCode

__all__ = ("End", "TcpEnd", "StreamEnd", "IdleTimeout", "PipeResult", "pipe")

CHUNK_SIZE = 64 * 1024


class IdleTimeout(Exception):
    """No data moved in either direction for the idle timeout."""


class End(Protocol):
    """One side of a pipe."""

    async def read(self) -> bytes:
        """Up to ``CHUNK_SIZE`` bytes; ``b""`` at end of data. Raises on reset/loss."""
        ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def write_eof(self) -> None:
        """Half-close: no more data in this direction."""
        ...

    def abort(self) -> None:
        """Tear the connection down at once, signalling an error (RST)."""
        ...

    async def close(self) -> None:
        """Close gracefully (both directions have ended)."""
        ...


class TcpEnd:
    """A TCP connection given as an asyncio ``(StreamReader, StreamWriter)`` pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self) -> bytes:
        return await self.reader.read(CHUNK_SIZE)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def write_eof(self) -> None:
        if self.writer.can_write_eof():
            self.writer.write_eof()

    def abort(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            try:  # linger 0: close() sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.writer.transport.abort()

    async def close(self) -> None:
        await close_writer(self.writer)


class StreamEnd:
    """A :class:`mio.Stream`."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def read(self) -> bytes:
        return await self.stream.read(CHUNK_SIZE)

    def write(self, data: bytes) -> None:
        self.stream.write(data)

    async def drain(self) -> None:
        await self.stream.drain()

    def write_eof(self) -> None:
        self.stream.write_eof()

    def abort(self) -> None:
        self.stream.reset(ErrorCode.INTERNAL_ERROR)

    async def close(self) -> None:
        self.stream.close()


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a TCP writer gracefully, ignoring errors of an already broken connection."""
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


@dataclasses.dataclass
class PipeResult:
    """Bytes copied ``a -> b`` (``sent``) and ``b -> a`` (``received``), and the error that
    aborted the pipe (None when both directions ended cleanly)."""

    sent: int = 0
    received: int = 0
    error: BaseException | None = None


class _Activity:
    __slots__ = ("last",)

    def __init__(self, now: float) -> None:
        self.last = now


async def _copy(src: End, dst: End, activity: _Activity, result: PipeResult, forward: bool) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await src.read()
        if not data:
            break
        activity.last = loop.time()
        if forward:
            result.sent += len(data)
        else:
            result.received += len(data)
        dst.write(data)
        await dst.drain()
    dst.write_eof()


async def _watch(activity: _Activity, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        remaining = activity.last + timeout - loop.time()
        if remaining <= 0:
            raise IdleTimeout(f"no data in either direction for {timeout:g} s")
        await asyncio.sleep(remaining)


async def pipe(a: End, b: End, *, idle_timeout: float | None = None) -> PipeResult:
    """Copy ``a -> b`` and ``b -> a`` until both directions ended or one failed.

    Never raises for connection errors: they abort both ends and are returned in
    :attr:`PipeResult.error`. Cancelling the pipe aborts both ends.
    """
    loop = asyncio.get_running_loop()
    result = PipeResult()
    activity = _Activity(loop.time())
    copies = {
        loop.create_task(_copy(a, b, activity, result, True)),
        loop.create_task(_copy(b, a, activity, result, False)),
    }
    tasks = set(copies)
    if idle_timeout:
        tasks.add(loop.create_task(_watch(activity, idle_timeout)))
    pending = set(tasks)
    aborted = True
    try:
        while not all(t.done() for t in copies):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is not None and result.error is None:
                    result.error = error
            if result.error is not None:
                break
        aborted = result.error is not None
    finally:
        if aborted:  # an error, the idle timeout, or cancellation
            a.abort()
            b.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await a.close()
    await b.close()
    return result
