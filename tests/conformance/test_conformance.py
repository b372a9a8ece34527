"""Behaviour every transport of the mio stream API must have, written once against mio.abc.

Each test runs over MIO/TCP, MIO/pipe and QUIC (the ``transport`` fixture of conftest.py),
on the default asyncio loop and on uvloop (``loop_kind``).
Tests use only the :mod:`mio.abc` interfaces and the :mod:`mio.errors` classes; nothing
here knows which transport it runs on, except the declared ``transport_xfail`` markers.
Waiting is bounded by timeouts; no test asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import os

import pytest

import mio
import mio.abc
from mio import (
    ErrorCode,
    SessionClosedError,
    StreamClosedError,
    StreamRefusedError,
    StreamResetError,
)

pytestmark = pytest.mark.timeout(30)

T = 10.0  # bound of every single wait


async def within(aw: object) -> object:
    return await asyncio.wait_for(aw, T)  # type: ignore[arg-type]


class EchoServer:
    """Echoes every stream the peer opens on ``session`` and records how each echo ended:
    ``None`` for the graceful end (the peer half-closed, everything was sent back, our
    direction ended), else the :class:`mio.MioError` that stopped it."""

    def __init__(self, session: mio.abc.Session) -> None:
        self.ended: dict[int, BaseException | None] = {}
        self._echoes: set[asyncio.Task[None]] = set()
        self._task = asyncio.ensure_future(self._serve(session))

    async def _serve(self, session: mio.abc.Session) -> None:
        async for stream in session:
            task = asyncio.ensure_future(self._echo(stream))
            self._echoes.add(task)
            task.add_done_callback(self._echoes.discard)

    async def _echo(self, stream: mio.abc.Stream) -> None:
        try:
            async for chunk in stream:
                await stream.send(chunk)
            stream.write_eof()
        except mio.MioError as exc:
            self.ended[stream.id] = exc
        else:
            self.ended[stream.id] = None

    async def ended_gracefully(self, *ids: int) -> None:
        """Wait until the echoes of the streams ``ids`` ended; each must have ended
        gracefully (a reset or a session error instead fails the test)."""

        async def ended() -> None:
            while not all(i in self.ended for i in ids):  # noqa: ASYNC110 - polled state
                await asyncio.sleep(0.005)

        await within(ended())
        assert {i: self.ended[i] for i in ids} == dict.fromkeys(ids)

    async def stop(self) -> None:
        """Stop serving; echoes still running are cancelled."""
        tasks = [self._task, *self._echoes]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------- interfaces
async def test_runs_on_the_requested_event_loop(transport, loop_kind: str) -> None:
    loop = asyncio.get_running_loop()
    assert type(loop).__module__.startswith(loop_kind), type(loop)
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"x")
        assert await within((await within(server.accept_stream())).readexactly(1)) == b"x"


async def test_sessions_and_streams_satisfy_the_protocols(transport) -> None:
    async with transport.pair() as (client, server):
        assert isinstance(client, mio.abc.Session)
        assert isinstance(server, mio.abc.Session)
        stream = await client.open_stream()
        assert isinstance(stream, mio.abc.Stream)
        await stream.send(b"x")
        accepted = await within(server.accept_stream())
        assert isinstance(accepted, mio.abc.Stream)
        assert accepted.id == stream.id
        assert stream.get_extra_info("stream_id") == stream.id
        assert stream.get_extra_info("session") is client
        assert stream.get_extra_info("no such thing", 42) == 42
        assert stream.get_extra_info("peername") is not None
        assert stream.can_write_eof()


# ---------------------------------------------------------------------- open / accept
async def test_client_opens_server_accepts(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"ping")
        peer = await within(server.accept_stream())
        assert await within(peer.readexactly(4)) == b"ping"
        await peer.send(b"pong")
        assert await within(stream.readexactly(4)) == b"pong"


async def test_server_opens_client_accepts(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await server.open_stream()
        await stream.send(b"ping")
        peer = await within(client.accept_stream())
        assert await within(peer.readexactly(4)) == b"ping"
        await peer.send(b"pong")
        assert await within(stream.readexactly(4)) == b"pong"


async def test_streams_opened_both_ways_at_once_are_distinct(transport) -> None:
    async with transport.pair() as (client, server):
        a = await client.open_stream()
        b = await server.open_stream()
        await a.send(b"from client")
        await b.send(b"from server")
        a_peer = await within(server.accept_stream())
        b_peer = await within(client.accept_stream())
        assert a.id != b.id
        assert (a_peer.id, b_peer.id) == (a.id, b.id)
        assert await within(a_peer.readexactly(11)) == b"from client"
        assert await within(b_peer.readexactly(11)) == b"from server"


@pytest.mark.transport_xfail(
    "quic",
    reason="a QUIC stream reaches the peer with its first STREAM frame: one opened and not "
    "yet written is invisible, so a later stream can be accepted first",
)
async def test_stream_is_announced_before_its_first_byte(transport) -> None:
    async with transport.pair() as (client, server):
        silent = await client.open_stream()
        talking = await client.open_stream()
        await talking.send(b"x")
        first = await within(server.accept_stream())
        assert first.id == silent.id


async def test_async_iteration_yields_accepted_streams_until_the_session_ends(transport) -> None:
    async with transport.pair() as (client, server):
        seen: list[int] = []
        three = asyncio.Event()

        async def collect() -> None:
            async for stream in server:
                seen.append(stream.id)
                if len(seen) == 3:
                    three.set()

        task = asyncio.ensure_future(collect())
        ids = []
        for _ in range(3):
            stream = await client.open_stream()
            await stream.send(b"hi")
            ids.append(stream.id)
        await within(three.wait())
        client.close()
        await within(task)  # the iteration ends, without an error, with the session
        assert seen == ids


# ---------------------------------------------------------------------- data
@pytest.mark.parametrize("size", [1, 1000, 200_000, 1_500_000])
async def test_echo(transport, size: int) -> None:
    payload = os.urandom(size)
    async with transport.pair() as (client, server):
        echoes = EchoServer(server)
        stream = await client.open_stream()
        reader = asyncio.ensure_future(stream.read())
        stream.write(payload)
        stream.write_eof()
        await within(stream.drain())
        assert await within(reader) == payload
        assert stream.at_eof()
        await within(stream.wait_closed())
        await echoes.ended_gracefully(stream.id)
        await echoes.stop()


async def test_write_takes_a_snapshot_and_writelines_keeps_order(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        buf = bytearray(b"abc")
        stream.write(buf)
        buf[:] = b"XYZ"
        stream.writelines([b"d", memoryview(b"ef"), bytearray(b"g")])
        stream.write_eof()
        await within(stream.drain())
        peer = await within(server.accept_stream())
        assert await within(peer.read()) == b"abcdefg"


async def test_readexactly_readuntil_readline(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        stream.write(b"0123456789line one\nrecord|rest")
        stream.write_eof()
        await stream.drain()
        peer = await within(server.accept_stream())
        assert await within(peer.readexactly(10)) == b"0123456789"
        assert await within(peer.readline()) == b"line one\n"
        assert await within(peer.readuntil(b"|")) == b"record|"
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await within(peer.readexactly(10))
        assert info.value.partial == b"rest"
        assert await within(peer.readline()) == b""
        assert await within(peer.readexactly(0)) == b""
        assert peer.at_eof()


async def test_readuntil_without_separator_before_eof(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        stream.write(b"no separator here")
        stream.write_eof()
        peer = await within(server.accept_stream())
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await within(peer.readuntil(b"\r\n"))
        assert info.value.partial == b"no separator here"


async def test_read_in_pieces_and_iterate(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        payload = os.urandom(300_000)
        stream.write(payload)
        stream.write_eof()
        peer = await within(server.accept_stream())
        first = await within(peer.read(10))
        assert 1 <= len(first) <= 10
        rest = b"".join([chunk async for chunk in peer])
        assert first + rest == payload
        assert await peer.read() == b""


# ---------------------------------------------------------------------- half-close
async def test_client_half_closes_first(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        stream.write(b"request")
        stream.write_eof()
        peer = await within(server.accept_stream())
        assert await within(peer.read()) == b"request"
        assert peer.at_eof()
        # the other direction is still open: the server answers after the client's EOF
        await peer.send(b"response")
        assert await within(stream.readexactly(8)) == b"response"
        assert not stream.at_eof()
        peer.write_eof()
        assert await within(stream.read()) == b""
        assert stream.at_eof()
        await within(stream.wait_closed())
        await within(peer.wait_closed())


async def test_server_half_closes_first(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"hello")
        peer = await within(server.accept_stream())
        peer.write(b"bye")
        peer.write_eof()
        assert await within(stream.read()) == b"bye"
        assert stream.at_eof()
        # the client's direction is still open
        await stream.send(b" and more")
        stream.write_eof()
        assert await within(peer.read()) == b"hello and more"
        await within(stream.wait_closed())
        await within(peer.wait_closed())


async def test_write_after_write_eof_raises_stream_closed(transport) -> None:
    async with transport.pair() as (client, _server):
        stream = await client.open_stream()
        stream.write(b"x")
        stream.write_eof()
        stream.write_eof()  # idempotent
        with pytest.raises(StreamClosedError):
            stream.write(b"more")
        with pytest.raises(BrokenPipeError):  # StreamClosedError is one
            stream.writelines([b"more"])
        with pytest.raises(StreamClosedError):
            await stream.send(b"more")


async def test_write_after_close_raises_stream_closed(transport) -> None:
    async with transport.pair() as (client, _server):
        stream = await client.open_stream()
        stream.close()
        assert stream.is_closing()
        with pytest.raises(StreamClosedError):
            stream.write(b"x")


async def test_close_delivers_written_data_then_eof(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        stream.write(b"last words")
        stream.close()
        peer = await within(server.accept_stream())
        assert await within(peer.read()) == b"last words"
        peer.close()
        await within(stream.wait_closed())
        await within(peer.wait_closed())


async def test_close_gives_up_on_a_silent_peer_after_linger_timeout(transport) -> None:
    async with transport.pair(mio.Config(linger_timeout=0.2)) as (client, server):
        stream = await client.open_stream()
        await stream.send(b"x")
        peer = await within(server.accept_stream())
        stream.close()  # the peer never ends its direction
        await within(stream.wait_closed())
        assert await within(peer.read()) == b"x"
        await within(peer.wait_closed())
        with pytest.raises(StreamClosedError):
            peer.write(b"too late")


async def test_close_with_data_the_peer_never_reads_ends_after_linger(transport) -> None:
    window = 64 * 1024
    config = mio.Config(initial_window=window, max_window=window, linger_timeout=0.2)
    async with transport.pair(config) as (client, server):
        stream = await client.open_stream()
        stream.write(os.urandom(1_000_000))
        peer = await within(server.accept_stream())
        stream.close()
        await within(stream.wait_closed())  # returns once linger_timeout gave up on the data
        # The peer learns that the rest will never come: a reset with CANCEL, not the
        # end of stream of a complete transfer (its window's worth of data is dropped).
        with pytest.raises(StreamResetError) as info:
            await within(peer.read())
        assert info.value.code == ErrorCode.CANCEL
        # The session is unharmed.
        again = await client.open_stream()
        await again.send(b"still here")
        assert await within((await within(server.accept_stream())).readexactly(10)) == (
            b"still here"
        )


async def test_stream_context_manager_closes_gracefully(transport) -> None:
    async with transport.pair() as (client, server):
        async with await client.open_stream() as stream:
            await stream.send(b"abc")
            peer = await within(server.accept_stream())
            assert await within(peer.readexactly(3)) == b"abc"
            await peer.send(b"def")
            assert await within(stream.readexactly(3)) == b"def"
            stream.write(b"last")
        # Leaving the block closed the stream, not reset it: the peer reads what was
        # written, then end of stream (a reset would raise StreamResetError here).
        assert await within(peer.read()) == b"last"
        assert peer.at_eof()
        with pytest.raises(StreamClosedError) as info:
            stream.write(b"after")
        assert not isinstance(info.value, StreamResetError)


async def test_stream_context_manager_resets_on_error(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"x")
        peer = await within(server.accept_stream())
        with pytest.raises(KeyError):
            async with stream:
                raise KeyError("boom")
        with pytest.raises(StreamResetError) as info:
            await within(peer.read())
        assert info.value.code == ErrorCode.INTERNAL_ERROR


# ---------------------------------------------------------------------- reset
@pytest.mark.parametrize("code", [ErrorCode.INTERNAL_ERROR, ErrorCode.PROTOCOL_ERROR, 5])
async def test_reset_is_seen_by_the_peer_with_its_code(transport, code: int) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"data")
        peer = await within(server.accept_stream())
        assert await within(peer.readexactly(4)) == b"data"
        stream.reset(code)
        with pytest.raises(StreamResetError) as info:
            await within(peer.read())
        assert info.value.code == code
        assert info.value.remote
        assert info.value.stream_id == peer.id
        assert isinstance(info.value, ConnectionResetError)
        # both directions are dead on both sides
        with pytest.raises(StreamResetError) as winfo:
            peer.write(b"late")
        assert winfo.value.code == code
        with pytest.raises(StreamResetError) as local:
            await stream.read()
        assert not local.value.remote
        assert local.value.code == code
        with pytest.raises(StreamResetError):
            stream.write(b"late")
        await within(peer.wait_closed())
        await within(stream.wait_closed())


async def test_reset_by_the_accepting_side(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"x")
        peer = await within(server.accept_stream())
        peer.reset(ErrorCode.CLOSED)
        with pytest.raises(StreamResetError) as info:
            await within(stream.readexactly(1))
        assert info.value.code == ErrorCode.CLOSED
        with pytest.raises(StreamResetError):
            await within(stream.send(b"y"))


async def test_reset_refused_raises_stream_refused(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"x")
        peer = await within(server.accept_stream())
        peer.reset(ErrorCode.REFUSED)
        with pytest.raises(StreamRefusedError) as info:
            await within(stream.read())
        assert info.value.code == ErrorCode.REFUSED


async def test_reset_drops_unread_data_and_wakes_a_blocked_drain(transport) -> None:
    config = mio.Config(initial_window=64 * 1024, max_window=64 * 1024, write_buffer_high=1)
    async with transport.pair(config) as (client, server):
        stream = await client.open_stream()
        stream.write(os.urandom(1_000_000))
        drain = asyncio.ensure_future(stream.drain())
        peer = await within(server.accept_stream())
        peer.reset(ErrorCode.INTERNAL_ERROR)
        with pytest.raises(StreamResetError):
            await within(drain)


async def test_peer_refuses_streams_over_its_accept_backlog(transport) -> None:
    async with transport.pair(mio.Config(accept_backlog=1)) as (client, server):
        first = await client.open_stream()
        await first.send(b"1")
        second = await client.open_stream()
        await second.send(b"2")
        with pytest.raises(StreamRefusedError):
            await within(second.read())
        peer = await within(server.accept_stream())
        assert peer.id == first.id


async def test_stream_reset_before_its_first_byte_reaches_the_peer_as_reset(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        stream.reset(ErrorCode.CLOSED)
        peer = await within(server.accept_stream())
        assert peer.id == stream.id
        with pytest.raises(StreamResetError) as info:
            await within(peer.read())
        assert info.value.code == ErrorCode.CLOSED


async def test_closing_session_refuses_new_streams(transport) -> None:
    async with transport.pair() as (client, server):
        busy = await client.open_stream()
        await busy.send(b"keeps the server's aclose waiting")
        busy_peer = await within(server.accept_stream())
        closing = asyncio.ensure_future(server.aclose(timeout=T))
        await asyncio.sleep(0.05)
        late = await client.open_stream()
        await late.send(b"too late")
        with pytest.raises(StreamRefusedError):
            await within(late.read())
        busy_peer.close()
        busy.close()
        await within(closing)


# ---------------------------------------------------------------------- backpressure
async def test_drain_waits_while_the_peer_does_not_read(transport) -> None:
    window = 64 * 1024
    config = mio.Config(initial_window=window, max_window=window, write_buffer_high=window)
    payload = os.urandom(2_000_000)
    async with transport.pair(config) as (client, server):
        stream = await client.open_stream()
        stream.write(payload)
        drain = asyncio.ensure_future(stream.drain())
        peer = await within(server.accept_stream())
        # Nobody reads: drain cannot finish, however long we wait (the bound only keeps the
        # test short; a slow machine makes it wait more, never fail).
        done, _ = await asyncio.wait({drain}, timeout=0.3)
        assert not done
        # ... and the receiver holds at most its window, not the whole payload.
        buffered = getattr(peer, "buffered", None)
        if buffered is not None:
            assert buffered <= window
        got = await within(peer.readexactly(len(payload)))
        assert got == payload
        await within(drain)


async def test_cancelled_drain_loses_nothing(transport) -> None:
    window = 64 * 1024
    config = mio.Config(initial_window=window, max_window=window, write_buffer_high=window)
    payload = os.urandom(500_000)
    async with transport.pair(config) as (client, server):
        stream = await client.open_stream()
        stream.write(payload)
        stream.write_eof()
        drain = asyncio.ensure_future(stream.drain())
        await asyncio.sleep(0.05)
        drain.cancel()
        peer = await within(server.accept_stream())
        assert await within(peer.read()) == payload
        await within(stream.drain())


async def test_one_blocked_stream_does_not_block_another(transport) -> None:
    window = 64 * 1024
    config = mio.Config(initial_window=window, max_window=window, write_buffer_high=window)
    async with transport.pair(config) as (client, server):
        stuck = await client.open_stream()
        stuck.write(os.urandom(1_000_000))
        stuck_peer = await within(server.accept_stream())
        free = await client.open_stream()
        await within(free.send(b"still flowing"))
        free_peer = await within(server.accept_stream())
        assert await within(free_peer.readexactly(13)) == b"still flowing"
        stuck.reset(ErrorCode.CLOSED)
        del stuck_peer


async def test_session_close_wakes_a_blocked_drain(transport) -> None:
    window = 64 * 1024
    config = mio.Config(initial_window=window, max_window=window, write_buffer_high=window)
    async with transport.pair(config) as (client, server):
        stream = await client.open_stream()
        stream.write(os.urandom(1_000_000))
        drain = asyncio.ensure_future(stream.drain())
        await within(server.accept_stream())
        done, _ = await asyncio.wait({drain}, timeout=0.1)
        assert not done
        client.close()
        with pytest.raises(SessionClosedError):
            await within(drain)


async def test_readuntil_overruns_at_the_receive_window(transport) -> None:
    window = 4096
    config = mio.Config(initial_window=window, max_window=window)
    async with transport.pair(config) as (client, server):
        stream = await client.open_stream()
        stream.write(b"x" * (4 * window))
        peer = await within(server.accept_stream())
        with pytest.raises(asyncio.LimitOverrunError):
            await within(peer.readuntil(b"\n"))
        stream.reset(ErrorCode.CLOSED)


async def test_peer_close_tells_a_sender_that_nobody_reads(transport) -> None:
    """close() while the peer still sends: our side is done at once (wait_closed returns),
    and the peer learns promptly that nobody reads: what we sent stays readable, then EOF,
    and its writes fail with StreamClosedError carrying NO_ERROR."""
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"first")
        peer = await within(server.accept_stream())
        peer.write(b"reply")
        peer.close()  # we are done: our data goes out, the rest is discarded
        await within(peer.wait_closed())
        assert await within(stream.read()) == b"reply"
        assert await within(stream.read()) == b""

        async def keep_sending() -> mio.StreamClosedError:
            while True:
                try:
                    await stream.send(b"discarded by the peer")
                except mio.StreamClosedError as exc:
                    return exc
                await asyncio.sleep(0.01)

        error = await within(keep_sending())
        assert error.code == ErrorCode.NO_ERROR
        await within(stream.wait_closed())


async def test_graceful_close_sends_no_reset(transport) -> None:
    """Both directions ended before close(): nothing is reset on either side."""
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        stream.write(b"request")
        stream.write_eof()
        peer = await within(server.accept_stream())
        assert await within(peer.read()) == b"request"
        peer.write(b"response")
        peer.close()
        await within(peer.wait_closed())
        assert await within(stream.read()) == b"response"
        stream.close()
        await within(stream.wait_closed())
        stream.write_eof()  # a no-op, not an error


async def test_many_sequential_streams_under_a_small_stream_limit(transport) -> None:
    async with transport.pair(mio.Config(max_streams=4)) as (client, server):
        echoes = EchoServer(server)
        ids = []
        for i in range(200):
            stream = await within(client.open_stream())
            ids.append(stream.id)
            msg = str(i).encode()
            stream.write(msg)
            stream.write_eof()
            assert await within(stream.read()) == msg
            await within(stream.wait_closed())
        await echoes.ended_gracefully(*ids)
        await echoes.stop()


# ---------------------------------------------------------------------- sessions
@pytest.mark.parametrize("code", [ErrorCode.INTERNAL_ERROR, ErrorCode.PROTOCOL_ERROR])
async def test_session_close_ends_the_peers_streams_with_the_code(transport, code: int) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"before close")
        peer = await within(server.accept_stream())
        assert await within(peer.readexactly(12)) == b"before close"
        accept = asyncio.ensure_future(server.accept_stream())
        read = asyncio.ensure_future(peer.read())
        client.close(code)
        assert client.is_closed
        with pytest.raises(SessionClosedError) as info:
            await within(read)
        assert info.value.code == code
        with pytest.raises(SessionClosedError):
            await within(accept)
        with pytest.raises(SessionClosedError):
            peer.write(b"x")
        with pytest.raises(SessionClosedError):
            await server.open_stream()
        await within(server.wait_closed())
        assert server.is_closed
        # the closing side's own stream is dead too
        with pytest.raises(SessionClosedError):
            stream.write(b"x")
        with pytest.raises(SessionClosedError):
            await client.open_stream()


async def test_session_close_no_error_cuts_open_streams_short(transport) -> None:
    """Buffered data stays readable, but a direction the peer never ended is not a clean EOF."""
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"tail")
        peer = await within(server.accept_stream())
        await within(peer.readexactly(1))
        client.close(ErrorCode.NO_ERROR)
        assert await within(peer.readexactly(3)) == b"ail"
        with pytest.raises(SessionClosedError) as info:
            await within(peer.read())
        assert info.value.code == ErrorCode.NO_ERROR
        await within(server.wait_closed())


async def test_session_close_after_half_close_reads_cleanly(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"tail")
        stream.write_eof()
        peer = await within(server.accept_stream())
        await within(peer.readexactly(4))

        assert await within(peer.read(1)) == b""  # the half-close arrived before the close
        client.close(ErrorCode.NO_ERROR)
        assert await within(peer.read()) == b""
        await within(server.wait_closed())


async def test_session_context_manager_closes(transport) -> None:
    async with transport.pair() as (client, server):
        async with client as session:
            assert session is client
            stream = await session.open_stream()
            await stream.send(b"x")
        assert client.is_closed
        await within(server.wait_closed())
        assert server.is_closed


async def test_aclose_lets_open_streams_finish(transport) -> None:
    async with transport.pair() as (client, server):
        stream = await client.open_stream()
        await stream.send(b"question")
        peer = await within(server.accept_stream())
        closing = asyncio.ensure_future(client.aclose(timeout=T))
        await asyncio.sleep(0)
        with pytest.raises(SessionClosedError):
            await client.open_stream()
        # the open stream still works both ways until it finishes
        assert await within(peer.readexactly(8)) == b"question"
        await peer.send(b"answer")
        peer.write_eof()
        assert await within(stream.read()) == b"answer"
        stream.write_eof()
        await within(closing)
        assert client.is_closed
        await within(server.wait_closed())


async def test_many_concurrent_streams(transport) -> None:
    count = 300
    async with transport.pair() as (client, server):
        echoes = EchoServer(server)

        async def one(i: int) -> int:
            stream = await client.open_stream()
            msg = f"stream {i} ".encode() * (i % 7 + 1)
            await stream.send(msg)
            assert await stream.readexactly(len(msg)) == msg
            stream.write_eof()
            assert await stream.read() == b""
            await stream.wait_closed()
            return stream.id

        ids = await within(asyncio.gather(*(one(i) for i in range(count))))
        assert len(set(ids)) == count
        await echoes.ended_gracefully(*ids)
        await echoes.stop()


async def test_open_stream_waits_at_the_stream_limit(transport) -> None:
    limit = 8
    async with transport.pair(mio.Config(max_streams=limit)) as (client, server):
        echoes = EchoServer(server)
        streams = []
        for _ in range(limit):
            stream = await within(client.open_stream())
            await stream.send(b"x")
            streams.append(stream)
        extra = asyncio.ensure_future(client.open_stream())
        done, _ = await asyncio.wait({extra}, timeout=0.2)
        assert not done
        first = streams[0]
        assert await within(first.readexactly(1)) == b"x"
        first.write_eof()
        assert await within(first.read()) == b""
        await within(first.wait_closed())
        stream = await within(extra)
        await stream.send(b"y")
        assert await within(stream.readexactly(1)) == b"y"
        await echoes.ended_gracefully(first.id)
        await echoes.stop()
