"""Every wait wakes when its stream or session ends (issue: RPC streams), on loopback TCP.

Each blocking call is started, then the stream or session is ended one way; the call must
finish (return or raise) promptly, never hang until an unrelated timeout.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from session_util import mio_pair

import mio
from mio.wire import ErrorCode

SMALL = mio.Config(initial_window=1024, max_window=1024, max_streams=1)

Wait = Callable[[mio.Session, mio.Stream], Awaitable[object]]


async def _read(session: mio.Session, stream: mio.Stream) -> object:
    return await stream.read(10)


async def _readexactly(session: mio.Session, stream: mio.Stream) -> object:
    return await stream.readexactly(100)


async def _readline(session: mio.Session, stream: mio.Stream) -> object:
    return await stream.readline()


async def _drain_window(session: mio.Session, stream: mio.Stream) -> object:
    stream.write(b"w" * 4096)  # more than the peer's 1 KiB window
    return await stream.drain()


async def _drain_transport(session: mio.Session, stream: mio.Stream) -> object:
    session.pause_writing()  # as asyncio does over the transport's high-water mark
    stream.write(b"t" * 10)
    return await stream.drain()


async def _wait_closed(session: mio.Session, stream: mio.Stream) -> object:
    return await stream.wait_closed()


async def _open_at_limit(session: mio.Session, stream: mio.Stream) -> object:
    return await session.open_stream()  # max_streams=1: waits


async def _accept(session: mio.Session, stream: mio.Stream) -> object:
    return await session.accept_stream()


STREAM_WAITS = [_read, _readexactly, _readline, _drain_window, _drain_transport, _wait_closed]
SESSION_WAITS = [_open_at_limit, _accept]


async def _local_reset(client: mio.Session, server: mio.Session, stream: mio.Stream) -> None:
    stream.reset(ErrorCode.INTERNAL_ERROR)


async def _peer_reset(client: mio.Session, server: mio.Session, stream: mio.Stream) -> None:
    peer = await asyncio.wait_for(server.accept_stream(), 5)
    peer.reset(ErrorCode.CANCEL)


async def _local_close(client: mio.Session, server: mio.Session, stream: mio.Stream) -> None:
    client.close()


async def _peer_fin(client: mio.Session, server: mio.Session, stream: mio.Stream) -> None:
    server.close(ErrorCode.NO_ERROR)


async def _transport_lost(client: mio.Session, server: mio.Session, stream: mio.Stream) -> None:
    server._transport.abort()  # type: ignore[union-attr]


STREAM_ENDS = [_local_reset, _peer_reset, _local_close, _peer_fin, _transport_lost]
SESSION_ENDS = [_local_close, _peer_fin, _transport_lost]


def _name(f: object) -> str:
    return f.__name__.strip("_")  # type: ignore[attr-defined]


async def _check(wait: Wait, end: Callable[..., Awaitable[None]], sessions_only: bool) -> None:
    async with mio_pair(None, config=SMALL) as (client, server):
        stream = await client.open_stream()
        stream.write(b"x")  # announce it
        task = asyncio.ensure_future(wait(client, stream))
        await asyncio.sleep(0.05)
        assert not task.done(), "the wait did not block: the test proves nothing"
        await end(client, server, stream)
        try:
            await asyncio.wait_for(task, 5)
        except (mio.MioError, asyncio.IncompleteReadError, ConnectionError):
            pass  # raising is a way to wake up; hanging is not


@pytest.mark.parametrize("end", STREAM_ENDS, ids=_name)
@pytest.mark.parametrize("wait", STREAM_WAITS, ids=_name)
async def test_stream_waits_wake_when_the_stream_or_session_ends(
    wait: Wait, end: Callable[..., Awaitable[None]]
) -> None:
    await _check(wait, end, sessions_only=False)


@pytest.mark.parametrize("end", SESSION_ENDS, ids=_name)
@pytest.mark.parametrize("wait", SESSION_WAITS, ids=_name)
async def test_session_waits_wake_when_the_session_ends(
    wait: Wait, end: Callable[..., Awaitable[None]]
) -> None:
    await _check(wait, end, sessions_only=True)


async def test_leaving_a_subscription_is_prompt_and_the_pusher_learns_it() -> None:
    """A client leaves ``async with stream`` while the server keeps pushing: the exit does
    not wait for the server, and the server's writes fail with StreamClosedError (code 0)."""
    pushed = asyncio.get_running_loop().create_future()

    async def pusher(stream: mio.Stream) -> None:
        try:
            while True:
                await stream.send(b"event\n")
                await asyncio.sleep(0.005)
        except mio.StreamClosedError as exc:
            pushed.set_result(exc)

    async with mio_pair(pusher) as (client, _server):
        stream = await client.open_stream()
        stream.write(b"subscribe")
        async with stream:
            assert await asyncio.wait_for(stream.readline(), 5) == b"event\n"
        # leaving did not wait for the server's direction to end
        assert stream.is_closing()
        error = await asyncio.wait_for(pushed, 5)
        assert error.code == ErrorCode.NO_ERROR
        assert "reads no more" in str(error)


async def test_cancelled_calls_reach_the_server_as_cancel() -> None:
    """1000 concurrent RPCs with random deadlines: every call that timed out reached the
    server as CANCEL (its handler cancelled), never as INTERNAL_ERROR, and the session
    stays usable."""
    rng = random.Random(7)
    outcomes: dict[str, int] = {"done": 0, "cancelled": 0, "failed": 0}

    async def handler(stream: mio.Stream) -> None:
        try:
            request = await stream.read()
            await asyncio.sleep(rng.random() * 0.2)
            await stream.send(request)
            outcomes["done"] += 1
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
            raise
        except Exception:
            outcomes["failed"] += 1
            raise

    async with mio_pair(handler) as (client, server):

        async def call(i: int) -> bool:
            try:
                async with asyncio.timeout(rng.random() * 0.5):
                    async with await client.open_stream() as stream:
                        stream.write(b"%d" % i)
                        stream.write_eof()
                        assert await stream.read() == b"%d" % i
                return True
            except TimeoutError:
                return False

        results = await asyncio.wait_for(asyncio.gather(*(call(i) for i in range(1000))), 60)
        timed_out = results.count(False)
        assert 0 < timed_out < 1000  # both outcomes happened
        await asyncio.sleep(0.1)
        assert outcomes["failed"] == 0
        by_code = server.resets_received_by_code
        assert by_code.get(ErrorCode.INTERNAL_ERROR, 0) == 0
        assert by_code.get(ErrorCode.CANCEL, 0) >= outcomes["cancelled"]
        assert outcomes["cancelled"] > 0
        assert client.stats["resets_sent"] <= timed_out
        # the session is still usable
        stream = await client.open_stream()
        stream.write(b"after")
        stream.write_eof()
        assert await asyncio.wait_for(stream.read(), 5) == b"after"
