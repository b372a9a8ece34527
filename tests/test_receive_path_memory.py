"""The payload assembly (PROTOCOL.md M9) against the memory rules: a partial
payload counted at its full size must neither stall the session (reading paused over memory
that only more reading can free) nor stay counted once the session is gone.

Runs on both event loops (``loop_kind``) and both codecs (the suite runs twice).
"""

from __future__ import annotations

import asyncio
from typing import Any

from _rawpeer import WAIT, RawPeer, h, open_

import mio
from mio._frame_py import KIND_DATA as DATA

KiB = 1024


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_partial_payload_over_the_memory_limit_does_not_stall_a_stream_protocol(
    loop_kind: str,
) -> None:
    """A 256 KiB payload on a session whose max_session_memory (128 KiB) is below it: its
    partial payload alone is over the limit, but pausing reading would keep it partial
    forever (a StreamProtocol never waits, so nothing sheds or resumes)."""
    received = bytearray()

    class Sink(mio.StreamProtocol):
        def data_received(self, data: bytes) -> None:
            received.extend(data)

    server = await mio.serve(Sink, "127.0.0.1", 0, config=mio.Config(max_session_memory=128 * KiB))
    peer = await RawPeer.connect(server.port)
    try:
        payload = bytes(range(256)) * (KiB)  # 256 KiB
        # header + 48 KiB in one segment: over an eighth, the payload is assembled
        peer.writer.write(open_(1) + h(1, len(payload), DATA) + payload[: 48 * KiB])
        await peer.writer.drain()
        await _until(lambda: bool(server.sessions), "the session")
        (session,) = server.sessions
        await _until(lambda: session.bytes_received >= 48 * KiB + 16, "the first piece")
        peer.writer.write(payload[48 * KiB :])
        await peer.writer.drain()
        await _until(lambda: len(received) == len(payload), "the whole payload")
        assert bytes(received) == payload
        assert session.memory["inbound"] == 0
        assert not session.is_reading_paused
    finally:
        peer.writer.close()
        server.close()
        await server.wait_closed()


async def test_partial_payload_is_not_counted_after_the_peer_goes_away(loop_kind: str) -> None:
    """The peer sends part of a payload (assembled, counted at its full size), then closes
    the connection: the partial payload is gone with the session, so nothing is inbound."""
    accepted: asyncio.Queue[mio.Stream] = asyncio.Queue()

    async def handler(stream: mio.Stream) -> None:
        accepted.put_nowait(stream)
        await asyncio.sleep(WAIT)

    server = await mio.serve(handler, "127.0.0.1", 0)
    peer = await RawPeer.connect(server.port)
    try:
        peer.writer.write(open_(1) + h(1, 64 * KiB, DATA) + b"x" * (16 * KiB))
        await peer.writer.drain()
        await asyncio.wait_for(accepted.get(), WAIT)
        (session,) = server.sessions
        await _until(lambda: session.memory["inbound"] == 64 * KiB, "the payload to be counted")
        peer.writer.close()
        await asyncio.wait_for(session.wait_closed(), WAIT)
        assert session.memory["inbound"] == 0
    finally:
        server.close()
        await server.wait_closed()


class _ReadsTransport(asyncio.Transport):
    """The reading half of a socket transport, driven by the test: each ``read`` is one
    ``get_buffer`` / ``recv_into`` / ``buffer_updated`` as asyncio's selector transport
    does, so the test chooses where every transport read ends."""

    def __init__(self, protocol: mio.Session) -> None:
        super().__init__()
        self.protocol = protocol
        self.paused = False
        self.closed = False

    def read(self, data: bytes) -> int:
        assert not self.paused
        buf = self.protocol.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        self.protocol.buffer_updated(n)
        return n

    def write(self, data: Any) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def test_inbound_bound_is_the_limit_plus_one_read_plus_one_partial_payload() -> None:
    """PROTOCOL.md M1 with M9: just under the limit, one 256 KiB read delivers 224 KiB and
    starts a 256 KiB payload with its first eighth: inbound reaches the limit plus 480 KiB,
    beyond one read, and within one read plus one partial payload. Reading pauses over the
    delivered bytes; once the application read enough, the rest of the payload is read
    straight into it and adds nothing."""
    limit = 1024 * KiB
    session = mio.Session(client=False, config=mio.Config(max_session_memory=limit))
    transport = _ReadsTransport(session)
    session.connection_made(transport)
    try:
        transport.read(open_(2, 0xFFFFFF))
        for size in [64 * KiB] * 15 + [64 * KiB - 1]:  # limit - 1 bytes, whole frames
            transport.read(h(2, size, DATA) + b"x" * size)
        assert session.memory["inbound"] == limit - 1
        assert not transport.paused
        first = 256 * KiB - 16 - 32 * KiB
        read = h(2, first, DATA) + b"y" * first + h(2, 256 * KiB, DATA) + b"z" * (32 * KiB)
        assert transport.read(read) == len(read) == 256 * KiB
        held = session.memory["inbound"]
        assert held == limit - 1 + first + 256 * KiB
        assert 256 * KiB < held - limit <= 256 * KiB + 256 * KiB
        assert transport.paused
        assert session.is_reading_paused
        stream = await session.accept_stream()
        assert len(await stream.readexactly(512 * KiB)) == 512 * KiB
        assert not transport.paused  # under the resume mark, the partial payload aside
        # The rest of the payload is read straight into it, and counted already
        assert transport.read(b"z" * (224 * KiB)) == 224 * KiB
        assert session.memory["inbound"] == held - 512 * KiB
        assert stream.buffered == held - 512 * KiB
    finally:
        session.close()
        session.connection_lost(None)


async def test_partial_payloads_over_a_shared_budget_do_not_stall_stream_protocols(
    loop_kind: str,
) -> None:
    """Three sessions of one server, each in the middle of a 256 KiB payload: their partial
    payloads fill the shared 512 KiB budget, but pausing them over it would keep them
    partial (and the budget full) forever."""
    received: dict[int, int] = {}

    class Sink(mio.StreamProtocol):
        def stream_opened(self, stream: mio.Stream) -> None:
            self.key = id(stream)
            received[self.key] = 0

        def data_received(self, data: bytes) -> None:
            received[self.key] += len(data)

    budget = mio.MemoryBudget(512 * KiB)
    server = await mio.serve(Sink, "127.0.0.1", 0, budget=budget)
    peers = [await RawPeer.connect(server.port) for _ in range(3)]
    try:
        payload = b"p" * (256 * KiB)
        for peer in peers:
            peer.writer.write(open_(1) + h(1, len(payload), DATA) + payload[: 48 * KiB])
            await peer.writer.drain()
        await _until(lambda: budget.held == 768 * KiB, "the partial payloads counted")
        for peer in peers:
            peer.writer.write(payload[48 * KiB :])
            await peer.writer.drain()
        await _until(lambda: sorted(received.values()) == [256 * KiB] * 3, "the payloads")
        assert budget.held == 0
    finally:
        for peer in peers:
            peer.writer.close()
        server.close()
        await server.wait_closed()
