"""Hostile and broken peers: a raw TCP socket speaks (bad) MIO to a mio server on loopback.

Every test has one defined outcome: the frame is ignored and everything keeps working, or
one stream is reset with a named code while the others keep working, or the session is
closed with FIN PROTOCOL_ERROR and mio's own streams fail with ``SessionClosedError``.
A following valid exchange (an echo on a control stream) proves the session stayed in sync.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import tracemalloc
from typing import Any

import pytest
from _rawpeer import (
    DATA,
    DATA_HFR,
    FIN,
    OPEN,
    RST,
    SWND,
    WAIT,
    WND,
    RawPeer,
    data,
    echo_handler,
    fin,
    h,
    mio_server,
    only_session,
    open_,
    raw_peer,
    rst,
    settle_tasks,
    swnd,
    wnd,
)
from session_util import eventually

import mio
from mio.wire import ErrorCode

PROTOCOL_ERROR = ErrorCode.PROTOCOL_ERROR


class Recorder:
    """Server handler: records every stream; holds the ids in ``hold`` (no reading), echoes
    the others."""

    def __init__(self, hold: set[int] | None = None, reset: dict[int, int] | None = None) -> None:
        self.hold = hold or set()
        self.reset = reset or {}
        self.streams: dict[int, mio.Stream] = {}
        self.tasks: dict[int, asyncio.Task[Any]] = {}
        self.release = asyncio.Event()

    async def __call__(self, stream: mio.Stream) -> None:
        self.streams[stream.id] = stream
        self.tasks[stream.id] = asyncio.current_task()  # type: ignore[assignment]
        if stream.id in self.reset:
            stream.reset(self.reset[stream.id])
            return
        if stream.id in self.hold:
            await self.release.wait()
            return
        async for chunk in stream:
            stream.write(chunk)
            await stream.drain()

    async def wait_stream(self, sid: int) -> mio.Stream:
        for _ in range(2000):
            if sid in self.streams:
                return self.streams[sid]
            await asyncio.sleep(0.005)
        raise AssertionError(f"stream {sid} never reached the handler")


async def expect_protocol_close(peer: RawPeer, session: mio.Session) -> None:
    """The session answers FIN PROTOCOL_ERROR as its last frame and closes the connection."""
    await peer.wait_eof()
    fins = peer.of_kind(FIN)
    assert fins == [(FIN, 0, PROTOCOL_ERROR)], peer.frames[-5:]
    assert peer.frames[-1] == fins[0]
    assert session.is_closed
    assert isinstance(session.close_error, mio.SessionClosedError)
    assert "protocol error" in str(session.close_error)


async def assert_stream_session_closed(stream: mio.Stream) -> None:
    with pytest.raises(mio.SessionClosedError):
        await asyncio.wait_for(stream.read(), WAIT)
    with pytest.raises(mio.SessionClosedError):
        stream.write(b"more")


async def assert_fresh_stream_echoes(peer: RawPeer, sid: int) -> None:
    """The session survived in sync: a stream opened now still echoes (then half-closes)."""
    payload = b"fresh stream %d" % sid
    await peer.echo(sid, payload)
    peer.send(data(sid, b"", hfr=True))
    await peer.flush()
    await peer.wait_for(lambda _f: peer.ended(sid), what=f"the end of fresh stream {sid}")
    assert peer.received(sid) == payload


async def read_until_error(stream: mio.Stream, error: type[BaseException]) -> bytes:
    """Read until ``error``; a clean end of stream before it is a failure."""
    got = b""
    while True:
        try:
            chunk = await asyncio.wait_for(stream.read(1000), WAIT)
        except error:
            return got
        assert chunk, "the stream ended cleanly instead of failing"
        got += chunk


# --------------------------------------------------------------------------------------------
# Frames that are ignored or tolerated.


async def test_reserved_bits_are_ignored() -> None:
    rec = Recorder()
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        # Bit 31 of the stream id and the flags bits 0xE0 set on every frame kind.
        peer.send(h(0x80000001, 1 << 20, OPEN | 0xE0))
        peer.send(h(0x80000001, 5, DATA | 0x20) + b"hello")
        peer.send(h(0x80000000, 0, SWND | 0x40))
        peer.send(h(0x80000001, 1000, WND | 0x80))
        peer.send(h(0x80000001, 3, DATA_HFR | 0xE0) + b"bye")
        await peer.flush()
        await peer.wait_for(lambda _f: peer.ended(1), what="echo + half-close")
        assert peer.received(1) == b"hellobye"
        await assert_fresh_stream_echoes(peer, 3)
        assert not peer.of_kind(RST)
        assert not peer.of_kind(FIN)
        assert not (await only_session(server)).is_closed


# --------------------------------------------------------------------------------------------
# Frames that close the session with FIN PROTOCOL_ERROR.


@pytest.mark.parametrize(
    "flags",
    [0x00, 0x03, 0x05, 0x06, 0x0D, 0x0E, 0x0F, 0x10, 0x12, 0x14, 0x19, 0x1F, 0xE3],
    ids=lambda f: f"0x{f:02x}",
)
async def test_unknown_flag_combination_closes_session(flags: int) -> None:
    rec = Recorder(hold={1})
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        peer.send(open_(1) + data(1, b"kept"))
        await peer.flush()
        stream = await rec.wait_stream(1)
        session = await only_session(server)
        peer.send(h(1, 0, flags) + open_(3) + data(3, b"never seen"))
        await peer.flush()
        await expect_protocol_close(peer, session)
        # The error names the offending frame: its offset in the connection (after the
        # 8 + 8 + 4 bytes of OPEN 1 and DATA "kept"), its flags and its stream id.
        where = f"frame at offset 20, flags 0x{flags:02x}, stream 1"
        assert where in str(session.close_error)
        # Already received data stays readable, then the session error.
        assert await stream.read(100) == b"kept"
        with pytest.raises(mio.SessionClosedError, match=re.escape(where)):
            await asyncio.wait_for(stream.read(), WAIT)
        await assert_stream_session_closed(stream)
        assert 3 not in rec.streams


@pytest.mark.parametrize(
    "frame",
    [
        h(0, 1000, OPEN),
        data(0, b"abc"),
        data(0, b"", hfr=True),
        h(0, 100, WND),
        h(0, 0, RST),
        h(5, 0, FIN),
        h(5, 0, SWND),
        h(0x7FFFFFFF, 7, FIN),
    ],
    ids=[
        "open-0",
        "data-0",
        "hfr-0",
        "wnd-0",
        "rst-0",
        "fin-5",
        "swnd-5",
        "fin-max",
    ],
)
async def test_frame_on_wrong_id_closes_session(frame: bytes) -> None:
    rec = Recorder(hold={1})
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        peer.send(open_(1))
        await peer.flush()
        stream = await rec.wait_stream(1)
        session = await only_session(server)
        peer.send(frame)
        await peer.flush()
        await expect_protocol_close(peer, session)
        await assert_stream_session_closed(stream)


async def test_oversized_data_header_closes_session() -> None:
    rec = Recorder(hold={1})
    config = mio.Config(max_recv_frame_size=1024)
    async with mio_server(rec, config) as server, raw_peer(server.port) as peer:
        peer.send(open_(1))
        await peer.flush()
        stream = await rec.wait_stream(1)
        session = await only_session(server)
        # The header claims 1025 bytes: refused before any payload is read.
        peer.send(h(1, 1025, DATA) + b"x" * 10)
        await peer.flush()
        await expect_protocol_close(peer, session)
        await assert_stream_session_closed(stream)


# --------------------------------------------------------------------------------------------
# Frames for streams that do not exist (any more).


async def test_data_for_unknown_stream_is_skipped_and_answered_once() -> None:
    rec = Recorder()
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        # The payload is made of valid-looking FIN headers: a decoder that did not skip it
        # (the reference's desync) would close the session.
        poison = h(0, 0, FIN) * 500
        for _ in range(3):
            peer.send(data(99, poison))
        peer.send(data(99, b"", hfr=True))
        await peer.echo(1, b"still in sync")
        assert peer.of_kind(RST, 99) == [(RST, 99, ErrorCode.CLOSED)]
        assert not peer.of_kind(FIN)
        assert 99 not in rec.streams


async def test_data_after_peer_reset_is_answered_closed_once() -> None:
    rec = Recorder(hold={3})
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        peer.send(open_(3) + data(3, b"a"))
        await peer.flush()
        stream = await rec.wait_stream(3)
        peer.send(rst(3, ErrorCode.INTERNAL_ERROR))
        peer.send(data(3, b"late" * 100) + data(3, b"later"))
        await peer.echo(1, b"control")
        assert peer.of_kind(RST, 3) == [(RST, 3, ErrorCode.CLOSED)]
        with pytest.raises(mio.StreamResetError) as info:
            await stream.read()
        assert info.value.code == ErrorCode.INTERNAL_ERROR
        assert info.value.remote
        assert (await only_session(server)).stream_count == 1  # the control stream


async def test_data_after_local_reset_is_not_answered_again() -> None:
    rec = Recorder(reset={5: ErrorCode.INTERNAL_ERROR})
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        peer.send(open_(5))
        await peer.flush()
        await peer.wait_for(lambda _f: peer.of_kind(RST, 5), what="RST of stream 5")
        # Data the peer had in flight before it saw the RST: dropped silently.
        for _ in range(5):
            peer.send(data(5, b"in flight" * 50))
        await peer.echo(1, b"control")
        assert peer.of_kind(RST, 5) == [(RST, 5, ErrorCode.INTERNAL_ERROR)]


async def test_rst_storm_for_unknown_ids_is_never_answered() -> None:
    rng = random.Random(7)
    async with mio_server() as server, raw_peer(server.port) as peer:
        storm = b"".join(
            rst(rng.randrange(1, 1 << 31), rng.choice([0, 1, 2, 3, 4, 7, 0xFFFFFF]))
            for _ in range(10_000)
        )
        peer.send(storm)
        await peer.echo(1, b"after the storm")
        peer.send(rst(1, ErrorCode.NO_ERROR) + rst(1, ErrorCode.NO_ERROR))  # twice for a known id
        await peer.echo(3, b"after the resets")
        assert not peer.of_kind(RST), peer.of_kind(RST)[:5]
        assert not peer.of_kind(FIN)


# --------------------------------------------------------------------------------------------
# Stream-level violations: that stream is reset, the others keep working.


async def test_open_with_id_in_use_resets_that_stream() -> None:
    rec = Recorder(hold={1})
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        peer.send(open_(1))
        await peer.flush()
        stream = await rec.wait_stream(1)
        peer.send(open_(1))
        await peer.echo(3, b"control")
        assert peer.of_kind(RST, 1) == [(RST, 1, PROTOCOL_ERROR)]
        with pytest.raises(mio.StreamResetError) as info:
            await stream.read()
        assert info.value.code == PROTOCOL_ERROR
        assert not info.value.remote
        assert (await only_session(server)).stream_count == 1


async def test_open_with_wrong_parity_is_accepted_if_unused() -> None:
    rec = Recorder()
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        # We dialed, so our ids should be odd; an even id (as a reference peer sends) is fine.
        await peer.echo(2, b"even id from the client")
        session = await only_session(server)
        own = await session.open_stream()
        assert own.id == 4  # 2 is taken by the peer: the server skips it
        await peer.wait_for(lambda _f: peer.of_kind(OPEN, 4), what="OPEN 4")
        own.write(b"from the server")
        await peer.wait_for(lambda _f: peer.received(4) == b"from the server", what="data on 4")
        await assert_fresh_stream_echoes(peer, 5)
        assert not peer.of_kind(RST)


async def test_data_after_the_peers_half_close_resets_that_stream() -> None:
    rec = Recorder(hold={1})
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        peer.send(open_(1) + data(1, b"all", hfr=True))
        await peer.flush()
        stream = await rec.wait_stream(1)
        peer.send(data(1, b"more"))  # the peer said it was done: a protocol violation
        await peer.echo(3, b"control")  # the session goes on
        assert peer.of_kind(RST, 1) == [(RST, 1, PROTOCOL_ERROR)]
        with pytest.raises(mio.StreamResetError) as info:
            await stream.read()
        assert info.value.code == PROTOCOL_ERROR
        assert not info.value.remote
        assert "DATA after the peer's half-close" in str(info.value)


async def test_open_stream_never_reuses_an_id_the_peer_used() -> None:
    """Ids of our parity the peer opened are never allocated by open_stream(), even once
    their streams are finished (a late frame for the old stream would hit the new one)."""
    rec = Recorder()
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        await peer.echo(2, b"even id from the client")
        await peer.echo(8, b"and a higher one")
        peer.send(data(2, b"", hfr=True) + data(8, b"", hfr=True))
        await peer.flush()
        await peer.wait_for(lambda _f: peer.ended(2) and peer.ended(8), what="both ended")
        session = await only_session(server)
        await eventually(lambda: session.stream_count == 0)  # 2 and 8 are finished
        own = [await session.open_stream() for _ in range(2)]
        assert [s.id for s in own] == [10, 12]
        for stream in own:
            stream.write(b"from the server %d" % stream.id)
        await peer.wait_for(lambda _f: peer.received(12), what="data on 12")
        assert peer.received(10) == b"from the server 10"
        assert [f.sid for f in peer.of_kind(OPEN)] == [10, 12]
        await assert_fresh_stream_echoes(peer, 15)
        assert not peer.of_kind(RST)


async def test_window_update_overflow_resets_that_stream() -> None:
    rec = Recorder()
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        peer.send(open_(1))
        await peer.flush()
        stream = await rec.wait_stream(1)
        # 1 MiB + 128 * 0xFFFFFF > 0x7FFFFFFF: the send window would overflow.
        peer.send(wnd(1, 0xFFFFFF) * 130)
        await peer.echo(3, b"control")
        assert peer.of_kind(RST, 1) == [(RST, 1, ErrorCode.FLOW_CONTROL_ERROR)]
        with pytest.raises(mio.StreamResetError) as info:
            stream.write(b"x")
        assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR


async def test_data_beyond_the_window_resets_that_stream_only() -> None:
    rec = Recorder(hold={1})
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        peer.send(open_(1, 1000) + data(1, b"a" * 600))
        await peer.flush()
        stream = await rec.wait_stream(1)
        peer.send(data(1, b"b" * 600) + data(1, b"c" * 600))  # 1800 > 1000, never read
        await peer.echo(3, b"control")
        assert peer.of_kind(RST, 1) == [(RST, 1, ErrorCode.FLOW_CONTROL_ERROR)]
        with pytest.raises(mio.StreamResetError) as info:
            await stream.read()
        assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
        await peer.echo(5, b"and another")


# --------------------------------------------------------------------------------------------
# Floods.


async def test_open_flood_beyond_stream_limit_is_refused() -> None:
    config = mio.Config(max_streams=8)
    rec = Recorder(hold=set(range(1, 10_001, 2)))
    async with mio_server(rec, config) as server, raw_peer(server.port) as peer:
        ids = range(1, 10_001, 2)  # 5000 OPENs
        peer.send(b"".join(open_(sid, 1 << 16) for sid in ids))
        await peer.flush()
        await peer.wait_for(
            lambda _f: len(peer.of_kind(RST)) >= len(ids) - 8, what="the REFUSED answers"
        )
        session = await only_session(server)
        refused = peer.of_kind(RST)
        assert {f[2] for f in refused} == {ErrorCode.REFUSED}
        assert sorted(f[1] for f in refused) == list(ids)[8:]
        assert session.stream_count == 8
        assert len(session._recent_resets) <= 4096 + 1  # bounded bookkeeping
        # Free the slots: the held handlers return (HFR), the peer half-closes too.
        rec.release.set()
        peer.send(b"".join(data(sid, b"", hfr=True) for sid in list(ids)[:8]))
        await peer.flush()
        await peer.wait_for(lambda _f: all(peer.ended(s) for s in list(ids)[:8]), what="HFRs")
        await peer.echo(19_999, b"a new stream after the flood")
        assert session.stream_count == 1


async def test_flood_of_tiny_data_frames_is_delivered() -> None:
    rec = Recorder()
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        n = 100_000
        payload = os.urandom(n)
        peer.send(open_(1, 1 << 20))
        peer.send(b"".join(data(1, payload[i : i + 1]) for i in range(n)))
        peer.send(data(1, b"", hfr=True))
        await peer.flush()
        await peer.wait_for(lambda _f: peer.ended(1), timeout=60, what="the echo of 100k frames")
        assert peer.received(1) == payload
        await assert_fresh_stream_echoes(peer, 3)
        assert not peer.of_kind(RST)
        assert not peer.of_kind(FIN)


def mio_memory() -> int:
    """Bytes currently allocated from mio's own source lines (tracemalloc must be on)."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/mio/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_tiny_frames_into_an_unread_stream_stay_bounded() -> None:
    # Memory per stream is bounded by its window in payload bytes; 2-byte frames must not
    # multiply it by the per-object overhead of 100k tiny chunks.
    rec = Recorder(hold={1})
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        n = 100_000
        peer.send(open_(1, 1 << 20))
        await peer.flush()
        stream = await rec.wait_stream(1)
        session = await only_session(server)
        flood = b"".join(data(1, bytes((i & 0xFF, 7))) for i in range(n))
        tracemalloc.start()
        try:
            before = mio_memory()
            peer.send(flood)
            await peer.flush()
            for _ in range(2000):
                if stream.buffered == 2 * n:
                    break
                await asyncio.sleep(0.005)
            held = mio_memory() - before
        finally:
            tracemalloc.stop()
        assert stream.buffered == 2 * n
        assert not session.is_closed
        # About 1.1x the payload (measured 1.09x on both codecs): not one object per frame.
        assert held < 1.2 * 2 * n, f"{held} bytes held for {2 * n} buffered bytes"
        data_read = await stream.readexactly(2 * n)
        assert data_read == b"".join(bytes((i & 0xFF, 7)) for i in range(n))
        await assert_fresh_stream_echoes(peer, 3)


# --------------------------------------------------------------------------------------------
# Peers that stop reading or stop granting window.


async def test_peer_that_never_reads_blocks_drain_with_bounded_memory() -> None:
    high = 256 * 1024
    state: dict[str, Any] = {"written": 0}

    async def writer(stream: mio.Stream) -> None:
        if stream.id != 1:
            await echo_handler(stream)  # the fresh stream opened at the end
            return
        state["stream"] = stream
        state["task"] = asyncio.current_task()
        chunk = b"w" * 65536
        while True:
            stream.write(chunk)
            await stream.drain()
            state["written"] += len(chunk)

    config = mio.Config(write_buffer_high=high)
    async with (
        mio_server(writer, config) as server,
        raw_peer(server.port, read=False, rcvbuf=64 * 1024) as peer,
    ):
        # A huge window (the peer says it will take 2 GiB) and then it never reads.
        peer.send(open_(1, 0xFFFFFF) + wnd(1, 0xFFFFFF) * 100)
        await peer.flush()
        session = await only_session(server)
        # Wait until the writer stops making progress: it is blocked in drain().
        last, still = -1, 0
        for _ in range(2000):
            await asyncio.sleep(0.02)
            written = state["written"]
            still = still + 1 if written == last else 0
            last = written
            if still >= 10:
                break
        assert still >= 10, "the writer never blocked"
        task = state["task"]
        assert not task.done()
        transport = session._transport
        assert transport is not None
        # mio's own buffering stays at the high-water mark plus one write.
        assert transport.get_write_buffer_size() <= high + 65536 + 8 * 2
        assert len(session._wbuf) <= 65536 + 8 * 2
        assert state["stream"].write_pending == 0
        assert state["written"] < 64 * 1024 * 1024
        task.cancel()  # the blocked writer is cancellable
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), WAIT)
        assert task.cancelled()
        assert not session.is_closed
        peer.start_reading()  # the peer reads again: the backlog, then a fresh stream
        await assert_fresh_stream_echoes(peer, 3)


async def test_peer_that_never_sends_window_updates() -> None:
    size = 1 << 20
    big = os.urandom(size)
    state: dict[str, Any] = {"drain_cancelled": asyncio.Event(), "finish": asyncio.Event()}

    async def handler(stream: mio.Stream) -> None:
        if stream.id != 1:
            await echo_handler(stream)  # the fresh stream opened at the end
            return
        await stream.readexactly(2)
        stream.write(big)
        drain = asyncio.ensure_future(stream.drain())
        state["stream"], state["drain"] = stream, drain
        try:
            await drain
        except asyncio.CancelledError:
            state["drain_cancelled"].set()
        await state["finish"].wait()
        await stream.drain()  # the window arrives: completes
        stream.write_eof()

    async with mio_server(handler) as server, raw_peer(server.port) as peer:
        peer.send(open_(1, 4096) + data(1, b"go"))
        await peer.flush()
        await peer.wait_for(lambda _f: len(peer.received(1)) >= 4096, what="the first window")
        stream = state["stream"]
        # By state, not by time: the sender is blocked on the window (none left, the rest
        # queued in the stream, mio's output buffer empty) ...
        session = stream.session
        await eventually(
            lambda: (
                stream.send_window == 0
                and stream.write_pending == size - 4096
                and not session._wbuf
            )
        )
        # ... and a barrier: mio answers a zero-window OPEN with RST REFUSED after whatever
        # it had sent before, so once that RST is here, every DATA mio sent on 1 is too.
        peer.send(open_(3, 0))
        await peer.flush()
        await peer.wait_for(lambda _f: peer.of_kind(RST, 3), what="RST REFUSED for stream 3")
        assert peer.of_kind(RST, 3) == [(RST, 3, ErrorCode.REFUSED)]
        assert peer.received(1) == big[:4096]  # not one byte more than the window
        assert stream.write_pending == size - 4096
        drain = state["drain"]
        assert not drain.done()
        drain.cancel()
        await asyncio.wait_for(state["drain_cancelled"].wait(), WAIT)
        assert stream.write_pending == size - 4096  # cancelling drain loses nothing
        state["finish"].set()
        peer.send(wnd(1, size))
        await peer.flush()
        await peer.wait_for(lambda _f: peer.ended(1), what="the rest after the window update")
        assert peer.received(1) == big
        await assert_fresh_stream_echoes(peer, 5)


async def test_server_close_cancels_handlers_of_a_session_the_peer_ended() -> None:
    """A session the peer ended leaves its handlers ``close_timeout`` to read what arrived;
    closing the server ends that grace at once and ``wait_closed()`` waits for them, so
    no handler outlives the server (even with a close_timeout far beyond the test's)."""
    rec = Recorder(hold={1})
    server = await mio.serve(rec, "127.0.0.1", 0, config=mio.Config(close_timeout=3600))
    try:
        peer = await RawPeer.connect(server.port)
        peer.send(open_(1) + data(1, b"kept") + fin())
        await peer.flush()
        stream = await rec.wait_stream(1)
        session = stream.session
        await peer.wait_eof()
        await peer.close()
        await asyncio.wait_for(session.wait_closed(), WAIT)
        await eventually(lambda: not server.sessions)  # forgotten as a connected session
        handler = rec.tasks[1]
        assert not handler.done()  # still within its close_timeout
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT)
    assert handler.cancelled()
    assert await stream.read(100) == b"kept"  # what arrived stays readable


# --------------------------------------------------------------------------------------------
# Peers that die or stop in the middle of a frame.


TRUNCATIONS = {
    "mid-header": h(1, 100, DATA)[:5],
    "mid-payload": h(1, 100, DATA) + b"0123456789",
}


@pytest.mark.parametrize("how", ["abort", "eof"])
@pytest.mark.parametrize("cut", list(TRUNCATIONS))
async def test_peer_dies_mid_frame(how: str, cut: str) -> None:
    baseline = set(asyncio.all_tasks())
    rec = Recorder(hold={1, 3})  # handlers that ignore their streams: cancelled after
    config = mio.Config(close_timeout=0.5)  # close_timeout once the session is gone
    async with mio_server(rec, config) as server, raw_peer(server.port) as peer:
        peer.send(open_(1) + data(1, b"whole") + open_(3))
        await peer.flush()
        s1 = await rec.wait_stream(1)
        s3 = await rec.wait_stream(3)
        session = await only_session(server)
        peer.send(TRUNCATIONS[cut])
        await peer.flush()
        if how == "abort":
            peer.abort()
        else:
            peer.writer.write_eof()  # a clean TCP FIN in the middle of a frame
        await asyncio.wait_for(session.wait_closed(), WAIT)
        assert isinstance(session.close_error, mio.SessionClosedError)
        if how == "eof":
            assert "in the middle of a frame" in str(session.close_error)
        # Stream 1 keeps what arrived (whole frames and the truncated frame's piece) and
        # then fails: never a clean end of stream that would hide the loss.
        got = await read_until_error(s1, mio.SessionClosedError)
        assert got == (b"whole0123456789" if cut == "mid-payload" else b"whole")
        await assert_stream_session_closed(s3)
    await settle_tasks(baseline)
    assert all(task.cancelled() for task in rec.tasks.values())


# --------------------------------------------------------------------------------------------
# One byte at a time.


def conversation() -> bytes:
    return b"".join(
        [
            open_(1, 1 << 16),
            h(0x80000003, 1 << 16, OPEN | 0xE0),
            data(1, b"hello "),
            swnd(0),
            data(3, b"other stream", hfr=True),
            data(1, b"world"),
            wnd(1, 1000),
            data(1, b"", hfr=True),
        ]
    )


async def test_one_byte_at_a_time_over_tcp() -> None:
    rec = Recorder()
    async with mio_server(rec) as server, raw_peer(server.port) as peer:
        for byte in conversation():
            peer.send(bytes([byte]))
            await peer.flush()
            await asyncio.sleep(0)
        await peer.wait_for(lambda _f: peer.ended(1) and peer.ended(3), what="both echoes")
        assert peer.received(1) == b"hello world"
        assert peer.received(3) == b"other stream"
        await assert_fresh_stream_echoes(peer, 5)
        assert not peer.of_kind(RST)
        assert not peer.of_kind(FIN)


class CaptureTransport(asyncio.Transport):
    """Collects what a session writes; nothing is delivered anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_one_byte_per_read_in_memory(impl: Any) -> None:
    # Deterministic: every data_received() call carries exactly one byte, on both codecs.
    session = mio.Session(client=False, _codec=impl)
    transport = CaptureTransport()
    session.connection_made(transport)
    for byte in conversation():
        session.data_received(bytes([byte]))
    s1 = await session.accept_stream()
    s3 = await session.accept_stream()
    assert (s1.id, s3.id) == (1, 3)
    assert await s1.read() == b"hello world"
    assert await s3.read() == b"other stream"
    assert s1.send_window == (1 << 16) + 1000
    s1.write(b"reply")
    s1.close()
    s3.close()
    await asyncio.sleep(0)
    out: list[Any] = []
    dec = impl.frame.FrameDecoder(
        lambda sid, p, end: out.append(("data", sid, bytes(p), end)),
        lambda kind, sid, value: out.append((kind, sid, value)),
    )
    dec.feed(bytes(transport.out))
    assert ("data", 1, b"reply", True) in out
    assert ("data", 3, b"", True) in out
    assert not [f for f in out if f[0] in (RST, FIN)]
    assert session.stream_count == 0
    # The session is in sync: a fresh stream, fed whole this time, still echoes.
    sent = len(transport.out)
    session.data_received(open_(5) + data(5, b"fresh", hfr=True))
    s5 = await session.accept_stream()
    s5.write(await s5.read())
    s5.close()
    await asyncio.sleep(0)
    out.clear()
    dec.feed(bytes(transport.out[sent:]))
    on5 = [f for f in out if f[0] == "data" and f[1] == 5]
    assert b"".join(f[2] for f in on5) == b"fresh"
    assert on5[-1][3]  # half-closed after the echo
    session.close()
    session.connection_lost(None)
    assert transport.closed
