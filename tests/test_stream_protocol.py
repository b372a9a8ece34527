"""The callback-based stream API (``mio.StreamProtocol``), over real loopback sockets:
no task per stream, data consumed as delivered, pause/resume backpressure, graceful close,
failures reset one stream only, ``stream_closed`` once with the reason."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from session_util import eventually

import mio
from mio import ErrorCode


class Recorder(mio.StreamProtocol):
    """Echoes, and records every callback (class-level list: one per test)."""

    events: ClassVar[list[tuple[Any, ...]]] = []
    instances: ClassVar[list[Recorder]] = []

    def __init__(self) -> None:
        self.stream: mio.Stream | None = None
        self.received = 0
        Recorder.instances.append(self)

    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream
        self.events.append(("opened", stream.id))

    def data_received(self, data: bytes) -> None:
        assert self.stream is not None
        self.received += len(data)
        self.stream.write(data)

    def eof_received(self) -> None:
        assert self.stream is not None
        self.events.append(("eof", self.stream.id))
        self.stream.close()

    def stream_closed(self, exc: BaseException | None) -> None:
        assert self.stream is not None
        self.events.append(("closed", self.stream.id, exc))


@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    Recorder.events = []
    Recorder.instances = []


async def _serve(protocol: type[mio.StreamProtocol], **kw: Any) -> tuple[mio.Server, mio.Session]:
    server = await mio.serve(protocol, "127.0.0.1", 0, **kw)
    client = await mio.connect("127.0.0.1", server.port, config=kw.get("config"))
    return server, client


@contextlib.asynccontextmanager
async def echo_pair() -> AsyncIterator[tuple[mio.Server, mio.Session]]:
    server, client = await _serve(Recorder)
    try:
        yield server, client
    finally:
        client.close()
        await client.wait_closed()
        server.close()
        await server.wait_closed()


def _server_session(server: mio.Server) -> mio.Session:
    (session,) = server.sessions
    return session


async def test_requests_are_answered_without_a_task_per_stream() -> None:
    async with echo_pair() as (server, client):
        tasks_before = len(asyncio.all_tasks())

        async def request(i: int) -> None:
            stream = await client.open_stream()
            payload = b"req-%d" % i
            stream.write(payload)
            stream.write_eof()
            assert await stream.read() == payload
            await stream.wait_closed()

        await asyncio.gather(*(request(i) for i in range(200)))
        session = _server_session(server)
        assert session._handler_tasks == set()  # no handler task was ever made
        assert len(asyncio.all_tasks()) <= tasks_before
        closed = [e for e in Recorder.events if e[0] == "closed"]
        assert len(closed) == 200
        assert all(e[2] is None for e in closed)  # every one ended gracefully
        assert session.stats["resets_sent"] == 0
        assert client.stats["resets_received"] == 0
        assert not session.streams  # and is forgotten


async def test_delivered_data_is_not_held_and_reopens_the_window() -> None:
    config = mio.Config(initial_window=65536, max_window=65536)
    server, client = await _serve(Recorder, config=config)
    try:
        stream = await client.open_stream()
        data = bytes(range(256)) * 4096  # 1 MiB: 16 windows
        sent = asyncio.ensure_future(_send_all(stream, data))
        echoed = await stream.read()
        await sent
        assert echoed == data
        session = _server_session(server)
        assert session.memory["inbound"] == 0
        (proto,) = Recorder.instances
        assert proto.received == len(data)
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def _send_all(stream: mio.Stream, data: bytes) -> None:
    for i in range(0, len(data), 65536):
        stream.write(data[i : i + 65536])
        await stream.drain()
    stream.write_eof()


class Pausing(mio.StreamProtocol):
    """Pauses after the first chunk; the test resumes it."""

    instance: ClassVar[Pausing | None] = None

    def __init__(self) -> None:
        self.got = bytearray()
        self.eof = False
        self.stream: mio.Stream | None = None
        Pausing.instance = self

    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream

    def data_received(self, data: bytes) -> None:
        assert self.stream is not None
        self.got += data
        self.stream.pause_reading()

    def eof_received(self) -> None:
        assert self.stream is not None
        self.eof = True
        self.stream.write(b"%d" % len(self.got))
        self.stream.close()


async def test_pause_reading_closes_the_window_and_resume_delivers_everything() -> None:
    window = 65536
    config = mio.Config(initial_window=window, max_window=window)
    server, client = await _serve(Pausing, config=config)
    try:
        stream = await client.open_stream()
        data = b"z" * (4 * window)
        sender = asyncio.ensure_future(_send_all(stream, data))
        session = None
        for _ in range(500):  # until the sender is stopped by the closed window
            await asyncio.sleep(0.005)
            if server.sessions:
                session = _server_session(server)
                if stream.write_pending and stream.send_window == 0:
                    break
        assert session is not None
        assert stream.send_window == 0
        assert stream.write_pending > 0
        proto = Pausing.instance
        assert proto is not None
        assert not sender.done()
        # what arrived after the pause is held, counted, and bounded by one window
        held = session.memory["inbound"]
        assert 0 < held <= window
        assert len(proto.got) + held <= window + 65536
        while not sender.done() or not proto.eof:  # resume until everything came
            assert proto.stream is not None
            proto.stream.resume_reading()
            await asyncio.sleep(0.001)
        await sender
        assert bytes(proto.got) == data
        assert await stream.read() == b"%d" % len(data)
        assert session.memory["inbound"] == 0
    finally:
        client.close()
        server.close()
        await server.wait_closed()


class Failing(mio.StreamProtocol):
    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream

    def data_received(self, data: bytes) -> None:
        if data == b"boom":
            raise ValueError("bad request")
        self.stream.write(data)

    def eof_received(self) -> None:
        self.stream.close()


async def test_a_failing_callback_resets_only_its_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, client = await _serve(Failing)
    try:
        bad = await client.open_stream()
        bad.write(b"boom")
        with pytest.raises(mio.StreamResetError) as info:
            await bad.read()
        assert info.value.code == ErrorCode.INTERNAL_ERROR
        assert "StreamProtocol.data_received failed on stream" in caplog.text
        good = await client.open_stream()
        good.write(b"fine")
        good.write_eof()
        assert await good.read() == b"fine"
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_stream_closed_reports_a_reset_by_the_peer() -> None:
    async with echo_pair() as (_, client):
        stream = await client.open_stream()
        stream.write(b"x")
        assert await stream.readexactly(1) == b"x"
        stream.reset(ErrorCode.CANCEL)
        for _ in range(200):
            if any(e[0] == "closed" for e in Recorder.events):
                break
            await asyncio.sleep(0.005)
        (closed,) = [e for e in Recorder.events if e[0] == "closed"]
        assert isinstance(closed[2], mio.StreamCancelledError)
        assert closed[2].code == ErrorCode.CANCEL


async def test_stream_closed_reports_the_session_ending() -> None:
    async with echo_pair() as (_, client):
        stream = await client.open_stream()
        stream.write(b"x")
        assert await stream.readexactly(1) == b"x"
        client.close()
        await client.wait_closed()
        for _ in range(200):
            if any(e[0] == "closed" for e in Recorder.events):
                break
            await asyncio.sleep(0.005)
        (closed,) = [e for e in Recorder.events if e[0] == "closed"]
        assert isinstance(closed[2], mio.SessionClosedError)


class Reader(mio.StreamProtocol):
    error: ClassVar[BaseException | None] = None

    def stream_opened(self, stream: mio.Stream) -> None:
        async def try_read() -> None:
            try:
                await stream.read()
            except RuntimeError as exc:
                Reader.error = exc
            stream.close()

        asyncio.get_running_loop().create_task(try_read())


async def test_a_protocol_stream_cannot_be_read() -> None:
    server, client = await _serve(Reader)
    try:
        stream = await client.open_stream()
        stream.write(b"x")  # delivered to the protocol: a read there would wait forever
        assert await stream.read() == b""  # the protocol's task closed the stream
        assert Reader.error is not None
        assert "delivers its data to its StreamProtocol" in str(Reader.error)
    finally:
        client.close()
        server.close()
        await server.wait_closed()


class BadFactory(mio.StreamProtocol):
    def __init__(self) -> None:
        raise RuntimeError("no")


async def test_a_failing_factory_resets_the_stream() -> None:
    server, client = await _serve(BadFactory)
    try:
        stream = await client.open_stream()
        stream.write(b"x")
        with pytest.raises(mio.StreamResetError) as info:
            await stream.read()
        assert info.value.code == ErrorCode.INTERNAL_ERROR
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_quic_refuses_protocol_classes() -> None:
    pytest.importorskip("aioquic")
    import mio.quic

    with pytest.raises(TypeError, match="coroutine stream handlers only"):
        await mio.quic.serve(Recorder, "127.0.0.1", 0)  # type: ignore[arg-type]


class PauseThenAnswer(mio.StreamProtocol):
    """Pauses at once, answers and half-closes before any data came, resumes later."""

    events: ClassVar[list[tuple[Any, ...]]] = []
    stream: mio.Stream

    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream
        stream.pause_reading()
        stream.write(b"hello")
        stream.write_eof()

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", len(data)))

    def eof_received(self) -> None:
        self.events.append(("eof",))

    def stream_closed(self, exc: BaseException | None) -> None:
        self.events.append(("closed", exc))


async def test_data_held_while_paused_is_delivered_before_the_stream_finishes() -> None:
    PauseThenAnswer.events = []
    server, client = await _serve(PauseThenAnswer)
    try:
        stream = await client.open_stream()
        stream.write(b"x" * 1000)
        stream.write_eof()
        assert await stream.read() == b"hello"
        session = _server_session(server)
        for _ in range(200):  # the 1000 bytes and the HFR arrive while paused
            if session.memory["inbound"] == 1000:
                break
            await asyncio.sleep(0.005)
        assert session.memory["inbound"] == 1000
        assert PauseThenAnswer.events == []  # both directions ended, yet not finished
        (held,) = session.streams
        held.resume_reading()
        assert PauseThenAnswer.events == [("data", 1000), ("eof",), ("closed", None)]
        assert session.memory["inbound"] == 0
        assert not session.streams
    finally:
        client.close()
        server.close()
        await server.wait_closed()


class Sink(mio.StreamProtocol):
    """Echoes to a peer that never reads."""

    instance: ClassVar[Sink | None] = None

    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream
        Sink.instance = self

    def data_received(self, data: bytes) -> None:
        self.stream.write(data)


async def test_a_peer_that_does_not_read_the_replies_is_stopped_by_its_window() -> None:
    window = 65536
    config = mio.Config(initial_window=window, max_window=window)
    server, client = await _serve(Sink, config=config)
    try:
        stream = await client.open_stream()
        sender = asyncio.ensure_future(_send_all(stream, b"z" * (64 * window)))
        for _ in range(1000):  # until the client is blocked by the server's window
            await asyncio.sleep(0.005)
            if stream.send_window == 0 and stream.write_pending and Sink.instance is not None:
                proto_stream = Sink.instance.stream
                if proto_stream.write_pending > window:
                    break
        assert Sink.instance is not None
        assert not sender.done()
        session = _server_session(server)
        # replies unsent: one window (what the client's window took) plus the last delivery
        assert Sink.instance.stream.write_pending <= 2 * window + 65536
        assert session.memory["inbound"] <= window  # input held back, bounded by the window
        # the sender stalled after a few windows: nothing grows without bound
        assert stream.bytes_sent <= 8 * window
        sender.cancel()
    finally:
        client.close()
        server.close()
        await server.wait_closed()


class PausedForever(mio.StreamProtocol):
    instance: ClassVar[PausedForever | None] = None

    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream
        stream.pause_reading()
        PausedForever.instance = self


async def test_tiny_frames_held_while_paused_share_buffers() -> None:
    server, client = await _serve(PausedForever)
    try:
        stream = await client.open_stream()
        for i in range(20_000):
            stream.write(b"yz")
            if i % 1000 == 0:
                await asyncio.sleep(0)
        await stream.drain()
        held = None
        for _ in range(400):
            await asyncio.sleep(0.005)
            held = PausedForever.instance.stream if PausedForever.instance else None
            if held is not None and held.buffered == 40_000:
                break
        assert held is not None
        assert held.buffered == 40_000
        assert len(held._chunks) <= 4  # not one object per 2-byte frame
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_the_peers_close_reaches_the_protocol_as_eof_then_stream_closed() -> None:
    async with echo_pair() as (_, client):
        stream = await client.open_stream()
        stream.write(b"x")
        assert await stream.readexactly(1) == b"x"
        stream.close()  # the peer still writes: RST NO_ERROR follows our HFR
        await stream.wait_closed()
        for _ in range(200):
            if any(e[0] == "closed" for e in Recorder.events):
                break
            await asyncio.sleep(0.005)
    kinds = [e[0] for e in Recorder.events]
    assert kinds == ["opened", "eof", "closed"]


class FailsAtEnd(mio.StreamProtocol):
    closed: ClassVar[list[BaseException | None]] = []

    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream

    def data_received(self, data: bytes) -> None:
        raise ValueError("bad last frame")

    def stream_closed(self, exc: BaseException | None) -> None:
        FailsAtEnd.closed.append(exc)


async def test_a_callback_failing_on_the_last_frame_ends_the_stream_at_once() -> None:
    FailsAtEnd.closed = []
    config = mio.Config(send_resets=False, linger_timeout=30.0)  # no RST: a half-close
    server, client = await _serve(FailsAtEnd, config=config)
    try:
        stream = await client.open_stream()
        stream.write(b"boom")
        stream.write_eof()  # DATA+HFR in one frame
        assert await stream.read() == b""  # our HFR: no linger of 30 s
        for _ in range(200):
            if FailsAtEnd.closed:
                break
            await asyncio.sleep(0.005)
        (exc,) = FailsAtEnd.closed
        assert isinstance(exc, ValueError)  # not reported as a graceful end
        assert not _server_session(server).streams
    finally:
        client.close()
        server.close()
        await server.wait_closed()


class FailingOpen(mio.StreamProtocol):
    closed: ClassVar[list[BaseException | None]] = []

    def stream_opened(self, stream: mio.Stream) -> None:
        raise KeyError("no route")

    def data_received(self, data: bytes) -> None:
        raise AssertionError("nothing is delivered after stream_opened failed")

    def stream_closed(self, exc: BaseException | None) -> None:
        self.closed.append(exc)


async def test_a_failing_stream_opened_resets_and_still_gets_stream_closed_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As asyncio calls ``connection_lost`` after a failed ``connection_made``: the stream is
    reset with INTERNAL_ERROR and ``stream_closed`` comes once, with the exception."""
    FailingOpen.closed.clear()
    server, client = await _serve(FailingOpen)
    try:
        stream = await client.open_stream()
        stream.write(b"hello")
        with pytest.raises(mio.StreamResetError) as info:
            await asyncio.wait_for(stream.read(), 5)
        assert info.value.code == ErrorCode.INTERNAL_ERROR
        assert "StreamProtocol.stream_opened failed on stream" in caplog.text
        assert len(FailingOpen.closed) == 1
        assert isinstance(FailingOpen.closed[0], KeyError)
    finally:
        client.close()
        server.close()
        await server.wait_closed()


class PausesOnTheLastFrame(mio.StreamProtocol):
    """Ends its own direction at once, then pauses inside ``data_received``: as the tunnel's
    pipe does when the other end's transport fills up on the peer's last bytes."""

    events: ClassVar[list[tuple[Any, ...]]] = []
    instance: ClassVar[PausesOnTheLastFrame | None] = None

    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream
        PausesOnTheLastFrame.instance = self
        stream.write_eof()

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", len(data)))
        self.stream.pause_reading()

    def eof_received(self) -> None:
        self.events.append(("eof",))

    def stream_closed(self, exc: BaseException | None) -> None:
        self.events.append(("closed", exc))


async def _hold_the_end(server: mio.Server, client: mio.Session, data: bytes) -> mio.Session:
    """Bring a PausesOnTheLastFrame stream to both directions ended, the end held: the
    peer's last frame (``data`` + HFR, or a bare HFR after an earlier byte) arrives while it
    pauses. Returns the server session."""
    stream = await client.open_stream()
    if not data:  # pause before the end arrives, with nothing left to deliver
        stream.write(b"x")
        await stream.drain()
        await eventually(lambda: bool(PausesOnTheLastFrame.events), 2.0)
    assert await stream.read() == b""  # the protocol's write_eof arrived
    stream.write(data)
    stream.write_eof()
    await stream.wait_closed()  # both HFRs crossed
    for _ in range(20):
        await asyncio.sleep(0.005)
    return _server_session(server)


@pytest.mark.parametrize("data", [b"last bytes", b""], ids=["data+HFR", "HFR alone"])
async def test_a_pause_on_the_last_frame_holds_the_end_until_resumed(data: bytes) -> None:
    # The stream's both directions have ended, but the protocol was not told of the peer's
    # end: it must not get stream_closed first (the tunnel took that for a lost
    # connection and reset a transfer that was complete).
    PausesOnTheLastFrame.events = []
    server, client = await _serve(PausesOnTheLastFrame)
    try:
        session = await _hold_the_end(server, client, data)
        expected_data = [("data", len(data or b"x"))]
        assert PausesOnTheLastFrame.events == expected_data  # not closed, not told
        assert len(session.streams) == 1
        held = PausesOnTheLastFrame.instance
        assert held is not None
        held.stream.resume_reading()
        assert PausesOnTheLastFrame.events == [*expected_data, ("eof",), ("closed", None)]
        assert not session.streams
    finally:
        client.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("data", [b"last bytes", b""], ids=["data+HFR", "HFR alone"])
async def test_close_while_the_end_is_held_finishes_the_stream(data: bytes) -> None:
    # A protocol paused on the peer's last frame (both directions ended, the end held) that
    # then gives up with close() instead of resume_reading(): the stream must finish (and
    # stream_closed come once), not stay in the session's table for good.
    PausesOnTheLastFrame.events = []
    server, client = await _serve(PausesOnTheLastFrame)
    try:
        session = await _hold_the_end(server, client, data)
        assert len(session.streams) == 1  # held, as the test above shows
        held = PausesOnTheLastFrame.instance
        assert held is not None
        held.stream.close()
        for _ in range(20):
            await asyncio.sleep(0.005)
        assert not session.streams
        assert held.stream.is_closing()
        closed = [e for e in PausesOnTheLastFrame.events if e[0] == "closed"]
        assert closed == [("closed", None)]
        held.stream.resume_reading()  # after close(): nothing more, no second stream_closed
        assert [e for e in PausesOnTheLastFrame.events if e[0] == "closed"] == closed
    finally:
        client.close()
        server.close()
        await server.wait_closed()


class FailsOnTheHeldData(PausesOnTheLastFrame):
    """Pauses on the first data; raises on the data held meanwhile, once resumed."""

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", len(data)))
        if len(self.events) == 1:
            self.stream.pause_reading()
        else:
            raise RuntimeError("boom")


async def test_a_callback_failing_on_held_data_without_resets_still_finishes() -> None:
    # send_resets=False: a failing callback half-closes (close()) instead of resetting. With
    # both directions ended and the end held, that close() must finish the stream.
    PausesOnTheLastFrame.events = []
    server, client = await _serve(FailsOnTheHeldData, config=mio.Config(send_resets=False))
    try:
        stream = await client.open_stream()
        assert await stream.read() == b""  # the protocol's write_eof arrived
        stream.write(b"a")
        await stream.drain()
        await eventually(lambda: bool(PausesOnTheLastFrame.events), 2.0)
        stream.write(b"held")
        stream.write_eof()
        await stream.wait_closed()
        session = _server_session(server)
        for _ in range(20):
            await asyncio.sleep(0.005)
        held = PausesOnTheLastFrame.instance
        assert held is not None
        held.stream.resume_reading()
        await eventually(lambda: not session.streams, 2.0)
        closed = [e for e in PausesOnTheLastFrame.events if e[0] == "closed"]
        assert len(closed) == 1
        assert isinstance(closed[0][1], RuntimeError)
        assert ("eof",) not in PausesOnTheLastFrame.events
    finally:
        client.close()
        server.close()
        await server.wait_closed()


class PausesOnData(mio.StreamProtocol):
    """Keeps its own direction open; pauses on the first data (only)."""

    events: ClassVar[list[tuple[Any, ...]]] = []
    instance: ClassVar[PausesOnData | None] = None

    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream
        PausesOnData.instance = self

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", bytes(data)))
        if len(self.events) == 1:
            self.stream.pause_reading()

    def eof_received(self) -> None:
        self.events.append(("eof",))

    def stream_closed(self, exc: BaseException | None) -> None:
        self.events.append(("closed", type(exc)))


async def test_a_peers_close_while_paused_still_delivers_what_it_sent() -> None:
    # The peer writes, then close()s while our direction is open: DATA+HFR, then RST
    # NO_ERROR. Its docstring promises everything it sent stays readable here; a paused
    # protocol must get the held data and eof_received before stream_closed.
    PausesOnData.events = []
    server, client = await _serve(PausesOnData)
    try:
        stream = await client.open_stream()
        stream.write(b"first")
        await stream.drain()
        await eventually(lambda: bool(PausesOnData.events), 2.0)
        stream.write(b"last")
        stream.close()
        await stream.wait_closed()
        for _ in range(20):
            await asyncio.sleep(0.005)
        held = PausesOnData.instance
        assert held is not None
        held.stream.resume_reading()
        assert PausesOnData.events == [
            ("data", b"first"),
            ("data", b"last"),
            ("eof",),
            ("closed", mio.StreamClosedError),
        ]
        assert not _server_session(server).streams
    finally:
        client.close()
        server.close()
        await server.wait_closed()
