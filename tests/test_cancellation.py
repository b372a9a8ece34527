"""Cancelling read, drain, open_stream and accept_stream (timeouts) never corrupts the
session, never leaks a stream, and later operations work."""

from __future__ import annotations

import asyncio
import random

import pytest
from session_util import echo, eventually, mio_pair, no_new_tasks, pending_tasks, roundtrip

import mio

SMALL = mio.Config(initial_window=4096, max_window=4096)


async def test_cancelled_read_loses_nothing(loop_kind: str) -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"hello")
        peer = await server.accept_stream()
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.read(10), 0.01)
        peer.write(b"12345")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(stream.readexactly(10), 0.05)  # half arrived
        peer.write(b"67890")
        peer.write_eof()
        assert await stream.readexactly(10) == b"1234567890"
        assert await stream.read() == b""
        assert await peer.readexactly(5) == b"hello"


async def test_cancelled_drain_keeps_the_data() -> None:
    payload = bytes(range(256)) * 100
    async with mio_pair(None, config=SMALL) as (client, server):
        stream = await client.open_stream()
        stream.write(payload)
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stream.drain(), 0.01)
        stream.write_eof()
        peer = await server.accept_stream()
        assert await peer.read() == payload
        await asyncio.wait_for(stream.drain(), 5)


async def test_cancelled_open_stream_at_the_limit() -> None:
    async with mio_pair(client_config=mio.Config(max_streams=2)) as (client, server):
        first = await client.open_stream()
        second = await client.open_stream()
        for _ in range(5):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.open_stream(), 0.01)
        assert client.stream_count == 2
        assert await roundtrip(first, b"one") == b"one"
        third = await asyncio.wait_for(client.open_stream(), 5)
        assert third.id == 5  # no id was consumed by the cancelled attempts
        assert await roundtrip(second, b"two") == b"two"
        assert await roundtrip(third, b"three") == b"three"
        await eventually(lambda: client.stream_count == 0 and server.stream_count == 0)


async def test_open_stream_waiting_at_the_limit_is_woken() -> None:
    async with mio_pair(client_config=mio.Config(max_streams=1)) as (client, _):
        first = await client.open_stream()
        waiting = asyncio.ensure_future(client.open_stream())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        assert await roundtrip(first, b"a") == b"a"
        second = await asyncio.wait_for(waiting, 5)
        assert await roundtrip(second, b"b") == b"b"


async def test_cancelled_accept_stream() -> None:
    async with mio_pair(None) as (client, server):
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(server.accept_stream(), 0.01)
        stream = await client.open_stream()
        stream.write(b"late")
        stream.write_eof()
        peer = await asyncio.wait_for(server.accept_stream(), 5)
        assert await peer.read() == b"late"
        peer.close()
        await stream.wait_closed()


async def test_random_timeouts_under_load_leave_a_clean_session() -> None:
    """Many streams, each op racing a tiny timeout that is retried: data stays exact."""
    rng = random.Random(1234)
    before = pending_tasks()

    timeouts = [0]

    async def with_retry(make: object) -> object:
        while True:
            try:
                return await asyncio.wait_for(make(), rng.choice([0, 0.0005, 0.002, 1]))  # type: ignore[operator]
            except TimeoutError:
                timeouts[0] += 1

    async def user(client: mio.Session, i: int) -> None:
        stream = await with_retry(client.open_stream)
        assert isinstance(stream, mio.Stream)
        sent = bytearray()
        received = bytearray()
        for j in range(5):
            msg = b"%d-%d;" % (i, j) * 50
            sent += msg
            stream.write(msg)
            await with_retry(stream.drain)
            while len(received) < len(sent):
                received += await with_retry(lambda: stream.read(4096))
        stream.write_eof()
        received += await stream.read()
        assert received == sent

    async with mio_pair(echo, config=SMALL, client_config=SMALL.replace(max_streams=8)) as (
        client,
        server,
    ):
        await asyncio.gather(*(user(client, i) for i in range(40)))
        await eventually(lambda: client.stream_count == 0 and server.stream_count == 0)
        assert await roundtrip(await client.open_stream(), b"still fine") == b"still fine"
    assert timeouts[0] > 100
    await no_new_tasks(before)


async def test_a_second_reader_is_refused_while_one_waits(loop_kind: str) -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"x")
        peer = await server.accept_stream()
        first = asyncio.ensure_future(stream.read(10))
        await asyncio.sleep(0.01)
        assert not first.done()
        for second in (stream.read(1), stream.readexactly(1), stream.readline(), anext(stream)):
            with pytest.raises(RuntimeError, match="another coroutine is already reading"):
                await second
        peer.write(b"one")
        assert await first == b"one"
        # the woken reader's future is gone: the next reads wait again, one at a time
        first = asyncio.ensure_future(stream.readexactly(3))
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="already reading"):
            await stream.read(1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # a cancelled read leaves no reader behind
        peer.write(b"two")
        assert await asyncio.wait_for(stream.readexactly(3), 5) == b"two"
        assert await peer.readexactly(1) == b"x"


async def test_a_read_closed_without_cancelling_leaves_no_reader_behind(loop_kind: str) -> None:
    """A read coroutine dropped while it waits (closed, not cancelled: driven by hand, or
    collected with its task) must not keep the stream "already being read"."""
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"x")
        peer = await server.accept_stream()
        for make in (
            lambda: stream.read(10),
            lambda: stream.read(),
            lambda: stream.readexactly(3),
            lambda: stream.readline(),
            lambda: anext(stream),
        ):
            coro = make()
            coro.send(None)  # suspended on the stream's waiter
            coro.close()
            peer.write(b"ab\n")
            assert await asyncio.wait_for(stream.readexactly(3), 5) == b"ab\n"
        assert await peer.readexactly(1) == b"x"


async def test_closing_a_woken_but_never_resumed_read_leaves_the_next_reader_alone(
    loop_kind: str,
) -> None:
    """Read A is woken (its future done, the stream's waiter cleared) but never resumed;
    read B waits next. Closing A afterwards must not drop B's waiter: B still gets data."""
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"x")
        peer = await server.accept_stream()
        first = stream.read(10)
        first.send(None)  # A waits
        peer.write(b"ab")
        await eventually(lambda: stream._size == 2)  # A's future is done; A never resumes
        assert await stream.read(10) == b"ab"
        second = asyncio.ensure_future(stream.read(10))  # B waits
        await asyncio.sleep(0.01)
        first.close()
        peer.write(b"cd")
        assert await asyncio.wait_for(second, 5) == b"cd"
        assert await peer.readexactly(1) == b"x"
