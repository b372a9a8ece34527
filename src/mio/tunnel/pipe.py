"""Copy bytes both ways between two connection ends, carrying half-close and resets.

An *end* is a TCP connection (:class:`TcpEnd`) or a mio stream (:class:`StreamEnd`).
:func:`pipe` runs one copy per direction:

* end of data on one side (TCP FIN, stream DATA+HFR) becomes a half-close of the other
  (``write_eof``), and the opposite direction keeps flowing;
* an error on either side (TCP reset, stream RST, session loss) or the idle timeout aborts
  both: the TCP connection is reset (RST) and the stream reset, so a truncated transfer never
  looks like a complete one;
* the idle timeout ``T`` with a minimum of ``B`` bytes: the pipe checks every ``T`` seconds
  and aborts when fewer than ``B`` bytes (both directions together) moved since the previous
  check. A quiet connection is reset between ``T`` and ``2T`` after it went quiet, and a
  trickle of fewer than ``B`` bytes per ``T`` cannot keep it alive;
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


async def _copy(src: End, dst: End, result: PipeResult, forward: bool) -> None:
    while True:
        data = await src.read()
        if not data:
            break
        if forward:
            result.sent += len(data)
        else:
            result.received += len(data)
        dst.write(data)
        await dst.drain()
    dst.write_eof()


async def _watch(result: PipeResult, timeout: float, min_bytes: int) -> None:
    last = 0
    while True:
        await asyncio.sleep(timeout)
        moved = result.sent + result.received
        if moved - last < min_bytes:
            if min_bytes <= 1:
                raise IdleTimeout(f"no data in either direction for {timeout:g} s")
            raise IdleTimeout(f"fewer than {min_bytes} bytes moved in {timeout:g} s")
        last = moved


async def pipe(
    a: End, b: End, *, idle_timeout: float | None = None, idle_min_bytes: int = 1
) -> PipeResult:
    """Copy ``a -> b`` and ``b -> a`` until both directions ended or one failed.

    With ``idle_timeout``, abort when fewer than ``idle_min_bytes`` moved in an interval of
    ``idle_timeout`` seconds (see the module docstring).

    Never raises for connection errors: they abort both ends and are returned in
    :attr:`PipeResult.error`. Cancelling the pipe aborts both ends.
    """
    loop = asyncio.get_running_loop()
    result = PipeResult()
    copies = {
        loop.create_task(_copy(a, b, result, True)),
        loop.create_task(_copy(b, a, result, False)),
    }
    tasks = set(copies)
    if idle_timeout:
        tasks.add(loop.create_task(_watch(result, idle_timeout, max(1, idle_min_bytes))))
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
