"""The scaffold of systems driven through a sans-IO protocol (``h2``, ``quic``): the
workloads' bulk and echo ends over any driver that can write a stream, send a small
message, read exactly ``n`` bytes and read to the end. A system file holds the driver."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from .. import common as C

__all__ = ("Driver", "DriverBulk", "DriverEcho", "StreamReads")


class StreamReads:
    """The client side's reads, for drivers whose stream records have ``sid``, ``buf``
    (bytearray), ``ended``, ``reset``, ``want`` and ``waiter`` (woken by the driver once
    ``len(buf) >= want`` or the stream ended)."""

    async def read_exactly(self, st: Any, n: int) -> bytes:
        while len(st.buf) < n:
            if st.ended or st.reset:
                raise EOFError(f"stream {st.sid} ended early")
            st.want = n
            st.waiter = asyncio.get_running_loop().create_future()
            await st.waiter
        d = bytes(st.buf[:n])
        del st.buf[:n]
        return d

    async def read_to_end(self, st: Any) -> bytes:
        while not st.ended:
            if st.reset:
                raise EOFError(f"stream {st.sid} reset")
            st.want = 1 << 62
            st.waiter = asyncio.get_running_loop().create_future()
            await st.waiter
        d = bytes(st.buf)
        st.buf.clear()
        return d


class Driver(Protocol):
    """What the h2 and aioquic client protocols offer per stream ``st``."""

    async def write(self, st: Any, data: bytes, end: bool = False) -> None: ...

    def send_small(self, st: Any, data: bytes, end: bool = False) -> None: ...

    async def read_exactly(self, st: Any, n: int) -> bytes: ...

    async def read_to_end(self, st: Any) -> bytes: ...


class DriverBulk:
    """W1/W4's bulk sink on stream ``st`` of driver ``p``."""

    def __init__(self, p: Driver, st: Any) -> None:
        self.p, self.st = p, st

    async def write(self, chunk: bytes) -> None:
        await self.p.write(self.st, chunk)

    async def finish(self) -> tuple[int, int]:
        await self.p.write(self.st, b"", end=True)
        resp = await self.p.read_to_end(self.st)
        if len(resp) != C.ACK.size:
            return -1, 0
        n, crc = C.ACK.unpack(resp)
        return n, crc


class DriverEcho:
    """One W3 stream ``st`` of driver ``p``."""

    def __init__(self, p: Driver, st: Any) -> None:
        self.p, self.st = p, st

    async def roundtrip(self, msg: bytes) -> bytes:
        self.p.send_small(self.st, msg)
        return await self.p.read_exactly(self.st, len(msg))

    async def finish(self) -> bool:
        self.p.send_small(self.st, b"", end=True)
        return await self.p.read_to_end(self.st) == b""
