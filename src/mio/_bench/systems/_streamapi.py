"""The scaffold of systems that speak mio's stream API (``mio`` over TCP, ``mio-quic``):
the server's three handlers and the client side of every workload, written once. A system
file adds only how it listens and connects.

Written the way an application would: ``write`` + ``drain``, ``write_eof`` to half-close,
``read``/``readexactly``, ``async for chunk in stream``.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from mio.abc import Session, Stream

from .. import common as C

__all__ = ("Bulk", "Echo", "StreamApiClient", "handlers")

Handler = Callable[[Any], Awaitable[None]]


def handlers(stats: dict[str, Any], verify: bool, bulk_id: int) -> dict[str, Handler]:
    """The listeners' stream handlers: ``bulk`` (count, CRC-32 with ``verify``, then
    acknowledge), ``echo`` (echo until EOF; returning closes the stream) and ``mixed`` (W4:
    stream ``bulk_id``, the session's first, is a bulk stream; every other is echoed)."""

    async def bulk(stream: Stream) -> None:
        n = crc = 0
        async for chunk in stream:
            n += len(chunk)
            if verify:
                crc = zlib.crc32(chunk, crc)
        stats["bulk_bytes"] = stats.get("bulk_bytes", 0) + n
        stream.write(C.ACK.pack(n, crc))
        await stream.drain()

    async def echo(stream: Stream) -> None:
        async for chunk in stream:
            stream.write(chunk)
            await stream.drain()

    async def mixed(stream: Stream) -> None:
        await (bulk if stream.id == bulk_id else echo)(stream)

    return {"bulk": bulk, "echo": echo, "mixed": mixed}


class Bulk:
    """W1/W4's bulk sink on one stream."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    async def write(self, chunk: bytes) -> None:
        self._stream.write(chunk)
        await self._stream.drain()

    async def finish(self) -> tuple[int, int]:
        s = self._stream
        s.write_eof()
        n, crc = C.ACK.unpack(await s.read())
        return n, crc


class Echo:
    """One W3 stream."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    async def roundtrip(self, msg: bytes) -> bytes:
        s = self._stream
        s.write(msg)
        await s.drain()
        return await s.readexactly(len(msg))

    async def finish(self) -> bool:
        s = self._stream
        s.write_eof()
        return await s.read() == b""


class StreamApiClient:
    """The workloads' client over a :class:`mio.abc.Session`; subclasses set
    ``self._session`` in :meth:`connect`."""

    def __init__(self) -> None:
        self._session: Session | None = None

    async def connect(self, kind: str) -> None:
        raise NotImplementedError

    def _open(self) -> Awaitable[Stream]:
        assert self._session is not None, "connect() first"
        return self._session.open_stream()

    async def open_bulk(self) -> Bulk:
        return Bulk(await self._open())

    async def request(self, i: int, payload: bytes) -> bytes:
        s = await self._open()
        s.write(payload)
        s.write_eof()
        await s.drain()
        return await s.read()

    async def open_echo(self, i: int) -> Echo:
        return Echo(await self._open())

    async def close(self) -> None:
        if self._session is not None:
            self._session.close()
            await self._session.wait_closed()
