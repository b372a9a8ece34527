"""Session._flush on a minimal transport: ``Session`` works with any asyncio transport, and
one that implements neither ``writelines`` nor ``get_write_buffer_size`` (both optional:
asyncio's defaults join, and raise ``NotImplementedError``) still gets large payloads."""

from __future__ import annotations

import asyncio
from typing import Any

import mio
from mio import _frame_py

KiB = 1024


class _MinimalTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def test_large_payload_on_a_transport_without_write_buffer_size() -> None:
    session = mio.Session(client=True)
    transport = _MinimalTransport()
    session.connection_made(transport)
    try:
        stream = await session.open_stream()  # OPEN waits in the output buffer
        payload = bytes(range(256)) * (64 * KiB // 256)
        stream.write(payload)  # >= 32 KiB of bytes: header, then the payload as is
        await asyncio.sleep(0)
        frames: list[tuple[Any, ...]] = []
        decoder = _frame_py.FrameDecoder(
            lambda sid, data, end: frames.append(("data", sid, data)),
            lambda kind, sid, value: frames.append((kind, sid, value)),
        )
        decoder.feed(bytes(transport.written))
        assert frames[0] == (0x0C, stream.id, mio.Config().initial_window)
        assert b"".join(f[2] for f in frames[1:] if f[0] == "data") == payload
    finally:
        session.close()
        session.connection_lost(None)


async def test_a_burst_of_small_writes_reaches_the_transport_before_the_loop_runs() -> None:
    """Small writes are buffered for one transport write per loop iteration, but a burst
    that fills the output buffer goes out at once (64 KiB, ``FLUSH_THRESHOLD``): the
    transport's flow control sees it and the session never holds more than a buffer."""
    from mio._core import FLUSH_THRESHOLD

    config = mio.Config(initial_window=4 * 1024 * 1024, max_window=4 * 1024 * 1024)
    session = mio.Session(client=True, config=config)
    transport = _MinimalTransport()
    session.connection_made(transport)
    try:
        streams = [await session.open_stream() for _ in range(8)]
        payload = b"x" * 100
        most = 0
        for _ in range(400):  # 8 x 400 x 100 bytes = 320 KiB, no await in between
            for stream in streams:
                stream.write(payload)
                most = max(most, len(session._wbuf))
        assert len(transport.written) >= 4 * FLUSH_THRESHOLD  # out before the loop ran
        assert most < FLUSH_THRESHOLD + len(payload) + 8
        await asyncio.sleep(0)
        frames: list[tuple[Any, ...]] = []
        dec = _frame_py.FrameDecoder(
            lambda sid, data, end: frames.append((sid, len(data))), lambda *a: None
        )
        dec.feed(bytes(transport.written))
        assert len(frames) == 8 * 400
        assert all(n == len(payload) for _, n in frames)
    finally:
        session.connection_lost(None)
