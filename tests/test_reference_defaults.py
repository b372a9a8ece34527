"""The reference (Go) implementation's own workloads, at its own defaults, against mio.

The peer is the model of ``_refpeer.py`` (window 0xFFFFFF, 1024-byte DATA frames, a
128-byte read buffer limit, one WINDOW UPDATE per read, ``Close()`` = RST NO_ERROR, even
ids from one counter, an accept queue of 32, a send queue of 128 frames), over loopback
TCP; mio runs ``Config.for_reference()``. Every workload runs to its end within a bound
and fails as soon as mio does anything the real reference would hang or desynchronise on:
any RST for a stream it knows, a FIN or EOF while it has streams open, DATA over 128
bytes, DATA beyond its window, DATA for a stream it forgot.

Both roles: the model CLIENT against a mio echo server (the handler of ``mio echo``), and a
mio CLIENT against the model SERVER (the reference's example echo). Run with
``MIO_NO_EXTENSIONS=1`` for the pure-Python codec; the 256 MiB bulk transfer is marked
``slow`` (``-m slow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from _rawpeer import settle_tasks
from _refpeer import (
    ACCEPT_BACKLOG,
    ACCEPT_TIMEOUT,
    READ_LIMIT,
    WINDOW,
    Ledger,
    RefServer,
    RefSession,
    RefStream,
    ref_client,
    ref_echo,
    run_bounded,
)
from session_util import eventually, raw_server

import mio
from mio.wire import ErrorCode, FrameKind

REF_CONFIG = mio.Config.for_reference()
#: Bound of one workload; the test's own timeout (conftest) is above it.
BOUND = 50.0
MIB = 1024 * 1024


def message(rnd: random.Random) -> bytes:
    return rnd.randbytes(rnd.randint(16, 64))


# --------------------------------------------------------------------------- mio side
class MioEcho:
    """The stream handler of ``mio echo`` (``mio.cli._echo_main.echo``, which is not
    importable: a closure): echo every chunk, a ``MioError`` ends the stream quietly. The
    errors it swallows are kept here, so a test can assert there were none."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.streams = 0
        self.bytes = 0

    async def __call__(self, stream: mio.Stream) -> None:
        self.streams += 1
        try:
            async for chunk in stream:
                stream.write(chunk)
                self.bytes += len(chunk)
                await stream.drain()
        except mio.MioError as exc:
            self.errors.append(exc)


@contextlib.asynccontextmanager
async def mio_server(
    handler: Callable[[mio.Stream], Awaitable[None]], config: mio.Config = REF_CONFIG
) -> AsyncIterator[tuple[mio.Server, list[mio.Session]]]:
    sessions: list[mio.Session] = []

    async def on_session(session: mio.Session) -> None:
        sessions.append(session)

    server = await mio.serve(handler, "127.0.0.1", 0, config=config, session_handler=on_session)
    try:
        yield server, sessions
    finally:
        server.close()
        await server.wait_closed()


def assert_mio_clean(session: mio.Session, *, resets_received: int | None = None) -> None:
    stats = session.stats
    assert stats["resets_sent"] == 0, stats
    assert stats["streams_refused"] == 0, stats
    assert stats["streams_shed"] == 0, stats
    assert session.stream_count == 0, stats
    if resets_received is not None:
        assert stats["resets_received"] == resets_received, stats


async def model_client_session(
    handler: Callable[[mio.Stream], Awaitable[None]],
    workload: Callable[[RefSession], Awaitable[Any]],
    *,
    config: mio.Config = REF_CONFIG,
    bound: float = BOUND,
) -> tuple[Any, mio.Session, Ledger]:
    """Run ``workload(model client)`` against a mio server with ``handler``, then close
    the way the reference does (FIN, transport left open) and check both sides."""
    before = set(asyncio.all_tasks())
    async with mio_server(handler, config) as (server, sessions), ref_client(server.port) as ref:
        ledger = ref.ledger
        result = await run_bounded(workload(ref), [ledger], bound, "model client workload")
        assert ref.stream_count == 0
        (session,) = sessions
        await run_bounded(
            eventually(lambda: session.stream_count == 0), [ledger], 10, "mio streams"
        )
        assert_mio_clean(session)
        await ref.close()  # FIN; mio closes the transport
        await run_bounded(ref.wait_ended(), [ledger], 10, "mio closing the transport")
        await ref.shutdown()  # the application's conn.Close() once the session ended
        await session.wait_closed()
        assert session.close_error is not None
        assert session.close_error.code == 0
        assert ledger.fins_received == []  # a FIN is not answered with a FIN
        assert_mio_clean(session)
        assert ledger.max_payload_received <= READ_LIMIT
        ledger.check()
    await settle_tasks(before)
    return result, session, ledger


@contextlib.asynccontextmanager
async def mio_client_of(ref_server: RefServer) -> AsyncIterator[mio.Session]:
    client = await mio.connect("127.0.0.1", ref_server.port, config=REF_CONFIG)
    try:
        yield client
    finally:
        client.close()
        await client.wait_closed()


async def mio_client_session(
    workload: Callable[[mio.Session], Awaitable[Any]],
    *,
    handler: Callable[[RefStream], Awaitable[None]] = ref_echo,
    bound: float = BOUND,
) -> tuple[Any, RefServer]:
    """Run ``workload(mio client)`` against a model server with ``handler``; before the mio
    client closes its session (FIN), wait until the model has ``Close()``-d every stream:
    a FIN while the reference still has a stream in its table deadlocks it."""
    before = set(asyncio.all_tasks())
    async with RefServer(handler) as ref_server:
        ledger = ref_server.ledger
        async with mio_client_of(ref_server) as client:
            result = await run_bounded(workload(client), [ledger], bound, "mio client workload")
            await run_bounded(
                eventually(lambda: client.stream_count == 0 and ref_server.stream_count == 0),
                [ledger],
                10,
                "both sides finishing their streams",
            )
            # Each model Close() is one RST NO_ERROR, and each late frame one RST CLOSED,
            # for streams mio had finished already.
            resets = len(ledger.opens_received) + len(ledger.late_frames)
            assert_mio_clean(client, resets_received=resets)
            client.close()
            (session,) = ref_server.sessions
            await run_bounded(session.wait_ended(), [ledger], 10, "the model seeing FIN")
            await client.wait_closed()
        assert ledger.fins_received == [0]
        assert_mio_clean(client)
        assert ledger.max_payload_received <= READ_LIMIT
        opens = ledger.opens_received
        assert [sid for sid, _ in opens] == list(range(1, 2 * len(opens), 2))
        assert {window for _, window in opens} == {WINDOW}
        assert session.next_id == opens[-1][0]  # the acceptor's counter, overwritten
        ledger.check()
    await settle_tasks(before)
    return result, ref_server


# --------------------------------------------------------------------------- workloads
async def ref_round_trips(ref: RefSession, streams: int, rounds: int) -> int:
    """``streams`` concurrent streams, ``rounds`` echo round trips each, then half-close,
    read to EOF and ``Close()``; every echoed byte checked. Returns the bytes echoed."""

    async def one(i: int) -> int:
        rnd = random.Random(i)
        stream = await ref.open_stream()
        total = 0
        for _ in range(rounds):
            msg = message(rnd)
            await stream.write(msg)
            assert await stream.read_exactly(len(msg)) == msg
            total += len(msg)
        await stream.close_write()
        assert await stream.read_to_eof() == b""
        await stream.close()
        return total

    return sum(await asyncio.gather(*(one(i) for i in range(streams))))


async def ref_requests(ref: RefSession, requests: int, openers: int) -> int:
    """``requests`` requests by ``openers`` concurrent openers, each on a new stream: open,
    write, half-close, read the echo to EOF, ``Close()``."""
    todo = iter(range(requests))
    done = 0

    async def opener() -> None:
        nonlocal done
        for i in todo:
            rnd = random.Random(i)
            request = rnd.randbytes(rnd.randint(1, 3000))
            stream = await ref.open_stream()
            await stream.write(request)
            await stream.close_write()
            assert await stream.read_to_eof() == request
            await stream.close()
            done += 1

    await asyncio.gather(*(opener() for _ in range(openers)))
    return done


async def ref_requests_closed_early(ref: RefSession, requests: int, openers: int) -> int:
    """The other usual Go client: write the request, ``io.ReadFull`` the reply, ``Close()``
    without half-closing: mio learns the stream ended from the RST NO_ERROR alone."""
    todo = iter(range(requests))
    done = 0

    async def opener() -> None:
        nonlocal done
        for i in todo:
            rnd = random.Random(i)
            request = rnd.randbytes(rnd.randint(1, 3000))
            stream = await ref.open_stream()
            await stream.write(request)
            assert await stream.read_exactly(len(request)) == request
            await stream.close()
            done += 1

    await asyncio.gather(*(opener() for _ in range(openers)))
    return done


async def mio_round_trips(client: mio.Session, streams: int, rounds: int) -> int:
    async def one(i: int) -> int:
        rnd = random.Random(i)
        stream = await client.open_stream()
        total = 0
        for _ in range(rounds):
            msg = message(rnd)
            await stream.send(msg)
            assert await stream.readexactly(len(msg)) == msg
            total += len(msg)
        stream.write_eof()
        assert await stream.read() == b""
        await stream.wait_closed()
        return total

    return sum(await asyncio.gather(*(one(i) for i in range(streams))))


async def mio_requests(client: mio.Session, requests: int, openers: int) -> int:
    todo = iter(range(requests))
    done = 0

    async def opener() -> None:
        nonlocal done
        for i in todo:
            rnd = random.Random(i)
            request = rnd.randbytes(rnd.randint(1, 3000))
            async with await client.open_stream() as stream:  # close() + wait_closed()
                await stream.send(request)
                stream.write_eof()
                assert await stream.read() == request
            done += 1

    await asyncio.gather(*(opener() for _ in range(openers)))
    return done


def pattern(seed: int) -> bytes:
    # 65537 bytes: frame boundaries (128 and 1024) drift through the pattern.
    return random.Random(seed).randbytes(65537)


# --------------------------------------------------------------------------- model client
async def test_model_client_1000_streams_100_round_trips() -> None:
    echo = MioEcho()
    total, _, ledger = await model_client_session(echo, lambda ref: ref_round_trips(ref, 1000, 100))
    assert echo.streams == 1000
    assert echo.bytes == total
    assert not echo.errors
    assert ledger.data_bytes_received == total


async def test_model_client_2000_requests_64_openers(loop_kind: str) -> None:
    echo = MioEcho()
    done, _, _ = await model_client_session(echo, lambda ref: ref_requests(ref, 2000, 64))
    assert done == 2000
    assert echo.streams == 2000
    assert not echo.errors


async def test_model_client_closes_without_half_close(loop_kind: str) -> None:
    echo = MioEcho()
    done, session, _ = await model_client_session(
        echo, lambda ref: ref_requests_closed_early(ref, 500, 64)
    )
    assert done == 500
    assert session.stats["resets_received"] == 500
    assert echo.streams == 500
    assert not echo.errors  # the RST NO_ERROR is an end of stream, not an error


async def reply_after_eof(stream: mio.Stream) -> None:
    """Read everything to EOF, then send it back: every byte is sent after the half-close."""
    data = await stream.read()
    await stream.send(data)


@pytest.mark.parametrize("handler", [MioEcho, lambda: reply_after_eof], ids=["echo", "reply"])
async def test_model_half_closes_first_mio_still_sends(
    handler: Callable[[], Any], loop_kind: str
) -> None:
    payload = pattern(1) * 4  # 256 KiB + 4 bytes, 257 DATA frames of the model

    async def workload(ref: RefSession) -> None:
        stream = await ref.open_stream()
        await stream.write(payload)
        await stream.close_write()  # before reading a single byte of the echo
        assert await stream.read_to_eof() == payload
        await stream.close()

    await model_client_session(handler(), workload)


async def test_mio_server_half_closes_first(loop_kind: str) -> None:
    greeting = pattern(2)[:5000]
    request = pattern(3) * 2
    got: list[bytes] = []

    async def greet_then_read(stream: mio.Stream) -> None:
        await stream.send(greeting)
        stream.write_eof()
        got.append(await stream.read())

    async def workload(ref: RefSession) -> None:
        stream = await ref.open_stream()
        assert await stream.read_to_eof() == greeting  # mio's direction ended first
        await stream.write(request)  # the model's direction still works
        await stream.close_write()
        await stream.close()

    await model_client_session(greet_then_read, workload)
    assert got == [request]


async def bulk_through_mio_echo(size: int, bound: float) -> None:
    block = pattern(4)

    async def workload(ref: RefSession) -> None:
        stream = await ref.open_stream()

        async def send() -> str:
            digest = hashlib.sha256()
            sent = 0
            while sent < size:
                chunk = block[: size - sent]
                await stream.write(chunk)
                digest.update(chunk)
                sent += len(chunk)
            await stream.close_write()
            return digest.hexdigest()

        async def receive() -> tuple[str, int]:
            digest = hashlib.sha256()
            n = 0
            while data := await stream.read():
                digest.update(data)
                n += len(data)
            return digest.hexdigest(), n

        sent, (received, n) = await asyncio.gather(send(), receive())
        assert n == size
        assert received == sent
        await stream.close()

    echo = MioEcho()
    _, session, ledger = await model_client_session(echo, workload, bound=bound)
    assert echo.bytes == size
    assert ledger.data_bytes_received == size
    # more than the 0xFFFFFF window went through: mio refilled it with (batched) updates
    assert ledger.frames_received[FrameKind.WINDOW_UPDATE] >= 1
    assert session.stats["bytes_received"] > size


async def test_bulk_16mib_through_mio_echo() -> None:
    await bulk_through_mio_echo(16 * MIB, BOUND)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_bulk_256mib_through_mio_echo() -> None:
    await bulk_through_mio_echo(256 * MIB, 850)


# --------------------------------------------------------------------------- mio client
async def test_mio_client_1000_streams_100_round_trips() -> None:
    total, ref_server = await mio_client_session(lambda c: mio_round_trips(c, 1000, 100))
    assert ref_server.ledger.data_bytes_received == total
    assert len(ref_server.ledger.opens_received) == 1000


async def test_mio_client_2000_requests_64_openers(loop_kind: str) -> None:
    done, ref_server = await mio_client_session(lambda c: mio_requests(c, 2000, 64))
    assert done == 2000
    assert len(ref_server.ledger.opens_received) == 2000


async def ref_reply_after_eof(stream: RefStream) -> None:
    data = await stream.read_to_eof()
    await stream.write(data)
    await stream.close_write()
    await stream.close()


@pytest.mark.parametrize("handler", [ref_echo, ref_reply_after_eof], ids=["echo", "reply"])
async def test_mio_half_closes_first_model_still_sends(
    handler: Callable[[RefStream], Awaitable[None]], loop_kind: str
) -> None:
    payload = pattern(5) * 4

    async def workload(client: mio.Session) -> None:
        stream = await client.open_stream()
        stream.write(payload)
        stream.write_eof()  # before reading a single byte of the echo
        await stream.drain()
        assert await stream.read() == payload
        await stream.wait_closed()

    await mio_client_session(workload, handler=handler)


async def test_model_server_half_closes_first(loop_kind: str) -> None:
    greeting = pattern(6)[:5000]
    request = pattern(7) * 2
    got: list[bytes] = []

    async def greet_then_read(stream: RefStream) -> None:
        await stream.write(greeting)
        await stream.close_write()
        got.append(await stream.read_to_eof())
        await stream.close()

    async def workload(client: mio.Session) -> None:
        stream = await client.open_stream()
        assert await stream.read() == greeting  # the model's direction ended first
        await stream.send(request)  # mio's direction still works
        stream.write_eof()
        await stream.wait_closed()

    await mio_client_session(workload, handler=greet_then_read)
    assert got == [request]


async def test_bulk_16mib_mio_client_through_model_echo() -> None:
    size = 16 * MIB
    block = pattern(8)

    async def workload(client: mio.Session) -> None:
        stream = await client.open_stream()

        async def send() -> str:
            digest = hashlib.sha256()
            sent = 0
            while sent < size:
                chunk = block[: size - sent]
                await stream.send(chunk)
                digest.update(chunk)
                sent += len(chunk)
            stream.write_eof()
            await stream.drain()
            return digest.hexdigest()

        async def receive() -> tuple[str, int]:
            digest = hashlib.sha256()
            n = 0
            while data := await stream.read(64 * 1024):
                digest.update(data)
                n += len(data)
            return digest.hexdigest(), n

        sent, (received, n) = await asyncio.gather(send(), receive())
        assert n == size
        assert received == sent
        await stream.wait_closed()

    _, ref_server = await mio_client_session(workload)
    assert ref_server.ledger.data_bytes_received == size


# --------------------------------------------------------------------------- accept queue
async def test_full_accept_queue_refuses_and_mio_does_not_answer(loop_kind: str) -> None:
    """A stalled model server (nobody accepts): 32 streams queue, the 33rd is answered
    with RST REFUSED after the reference's 1 ms; mio fails that stream and sends nothing
    back. Once the application accepts, the 32 queued streams work."""
    before = set(asyncio.all_tasks())
    async with RefServer(accepting=False, accept_timeout=ACCEPT_TIMEOUT) as ref_server:
        ledger = ref_server.ledger
        async with mio_client_of(ref_server) as client:

            async def workload() -> None:
                queued = [await client.open_stream() for _ in range(ACCEPT_BACKLOG)]
                extra = await client.open_stream()
                with pytest.raises(mio.StreamRefusedError):
                    await extra.read()
                assert ledger.refused == [extra.id]
                ref_server.start_accepting()
                for i, stream in enumerate(queued):
                    stream.write(b"queued %d" % i)
                    stream.write_eof()
                for i, stream in enumerate(queued):
                    assert await stream.read() == b"queued %d" % i
                    await stream.wait_closed()

            await run_bounded(workload(), [ledger], BOUND, "full accept queue")
            await run_bounded(
                eventually(lambda: ref_server.stream_count == 0), [ledger], 10, "model Close()"
            )
            assert_mio_clean(client, resets_received=ACCEPT_BACKLOG + 1)
        ledger.check(refused_ok=True)
    await settle_tasks(before)


# --------------------------------------------------------------------------- the model bites
async def handler_resets(stream: mio.Stream) -> None:
    await stream.read(1)
    stream.reset(mio.ErrorCode.NO_ERROR)


async def echo_then_close_session(stream: mio.Stream) -> None:
    await stream.send(await stream.readexactly(300))
    stream.session.close()


@pytest.mark.parametrize(
    ("config", "handler", "expected"),
    [
        pytest.param(
            REF_CONFIG.replace(max_frame_size=1024), MioEcho(), "over the 128-byte", id="frame"
        ),
        pytest.param(REF_CONFIG, handler_resets, "RST (code 0) for stream 2", id="rst"),
        pytest.param(
            REF_CONFIG, echo_then_close_session, "FIN (code 0) with 1 streams open", id="fin"
        ),
    ],
)
async def test_model_records_what_would_hang_the_reference(
    config: mio.Config, handler: Callable[[mio.Stream], Awaitable[None]], expected: str
) -> None:
    """The model is not a pushover: mio misconfigured or misused is caught at once."""
    async with mio_server(handler, config) as (server, _), ref_client(server.port) as ref:

        async def workload() -> None:
            stream = await ref.open_stream()
            await stream.write(b"x" * 300)
            await stream.read_exactly(300)
            await stream.read()  # the stream stays open: only a violation ends this

        with pytest.raises(AssertionError, match="would hang or desynchronise") as info:
            await run_bounded(workload(), [ref.ledger], 10)
        assert expected in str(info.value)


# --------------------------------------------------------------------------- the model itself
async def test_model_speaks_like_the_reference() -> None:
    """What the model puts on the wire, seen by a raw peer: the reference's defaults."""
    async with raw_server() as (port, peers), ref_client(port) as ref:
        raw = await asyncio.wait_for(peers.get(), 10)
        first, second = await ref.open_stream(), await ref.open_stream()
        await first.write(b"a" * 2500)
        await first.close_write()
        assert [(f.sid, f.value, f.kind) for f in [await raw.read_frame() for _ in range(6)]] == [
            (2, WINDOW, FrameKind.OPEN),
            (4, WINDOW, FrameKind.OPEN),
            (2, 1024, FrameKind.DATA),
            (2, 1024, FrameKind.DATA),
            (2, 452, FrameKind.DATA),
            (2, 0, FrameKind.DATA_HFR),  # half-close: a separate, empty frame
        ]
        raw.data(second.id, b"b" * 300)  # 128-byte frames
        await raw.drain()
        await eventually(lambda: second.received == 300)
        assert await second.read(100) == b"b" * 100
        assert await second.read() == b"b" * 200
        await second.close()
        assert [(f.sid, f.value, f.kind) for f in [await raw.read_frame() for _ in range(3)]] == [
            (4, 100, FrameKind.WINDOW_UPDATE),  # one per read, for exactly the bytes read
            (4, 200, FrameKind.WINDOW_UPDATE),
            (4, 0, FrameKind.RST),  # Close(): RST NO_ERROR, forgotten at once
        ]
        assert ref.stream_count == 1
        await ref.close()
        assert await raw.read_frame() == (0, 0, FrameKind.FIN, b"")
        ref.ledger.check()


def raw_frame(sid: int, value: int, flags: int, payload: bytes = b"") -> bytes:
    return sid.to_bytes(4, "big") + value.to_bytes(3, "big") + bytes([flags]) + payload


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (raw_frame(1, 100, 0x0C) + raw_frame(1, 128, 0x01, b"x" * 128), "beyond the granted"),
        (raw_frame(9, 5, 0x01, b"hello"), "for unknown stream 9"),
        (raw_frame(1, WINDOW, 0x0C) + raw_frame(1, 0, 0x04), "RST (code 0) for stream 1"),
        (raw_frame(1, WINDOW, 0x0C) + raw_frame(0, 0, 0x02), "FIN (code 0) with 1 streams"),
        (raw_frame(1, WINDOW, 0x0C), "transport EOF with 1 streams open"),
        (raw_frame(1, WINDOW, 0x0C) * 2, "OPEN for stream 1, which it already has"),
    ],
    ids=["window", "unknown", "rst", "fin", "eof", "reopen"],
)
async def test_model_records_fatal_frames(frames: bytes, expected: str) -> None:
    async with RefServer(accepting=False) as ref_server:
        _, writer = await asyncio.open_connection("127.0.0.1", ref_server.port)
        writer.write(frames)
        writer.write_eof()
        await run_bounded(ref_server.ledger.hung.wait(), [], 10, "a fatal violation")
        writer.close()
        assert any(expected in fatal for fatal in ref_server.ledger.fatal), ref_server.ledger.fatal


async def test_model_ignores_what_the_reference_ignores() -> None:
    async with RefServer(accepting=False) as ref_server:
        reader, writer = await asyncio.open_connection("127.0.0.1", ref_server.port)
        writer.write(
            raw_frame(0, 0, 0x08)  # keepalive
            + raw_frame(0, 5000, 0x08)  # session window update: ignored
            + raw_frame(7, 3, 0x09)  # window update for an unknown stream
            + raw_frame(1, WINDOW, 0x0C)
            + raw_frame(1, 10, 0x0D)  # SYN|RST|WND: classified as a window update
        )
        assert await reader.readexactly(8) == raw_frame(7, ErrorCode.CLOSED, 0x04)
        ledger = ref_server.ledger
        await eventually(lambda: len(ledger.opens_received) == 1 and ledger.anomalies)
        (session,) = ref_server.sessions
        assert session.streams[1].send_window == WINDOW + 10
        assert ledger.late_frames == [(7, 0x09)]
        assert ledger.anomalies == ["server#0: non-canonical flags 0x0d on 1"]
        assert not ledger.fatal
        assert ledger.frames_received[0x08] == 2
        writer.close()
