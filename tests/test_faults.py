"""Faults and load: cancellation at random points, liveness (keepalive / idle timeout), and
checksummed transfers that must lose nothing while other streams are reset around them.

``tests/test_cancellation.py`` covers each operation timing out on its own; here whole
stream-owning tasks are cancelled at random moments (often while a large write is only
partly sent), and a checksummed transfer afterwards proves the session is intact.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import pytest
from _rawpeer import (
    FIN,
    SWND,
    WAIT,
    data,
    mio_server,
    open_,
    raw_peer,
    settle_tasks,
    swnd,
)
from session_util import echo, eventually, mio_pair

import mio

SMALL = mio.Config(initial_window=16 * 1024, max_window=64 * 1024, max_frame_size=4096)


async def checksum_transfer(client: mio.Session, size: int = 2 << 20) -> None:
    """A fresh stream carries ``size`` random bytes to the echo server and back intact."""
    payload = random.Random(size).randbytes(size)
    stream = await client.open_stream()

    async def send() -> None:
        for i in range(0, size, 100_000):
            stream.write(payload[i : i + 100_000])
            await stream.drain()
        stream.write_eof()

    sender = asyncio.ensure_future(send())
    got = await asyncio.wait_for(stream.read(), WAIT)
    await sender
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    await asyncio.wait_for(stream.wait_closed(), WAIT)


# --------------------------------------------------------------------------------------------
# Cancellation.


async def test_cancelling_stream_owners_at_random_points() -> None:
    rng = random.Random(2024)
    baseline = set(asyncio.all_tasks())
    completed: list[int] = []

    async def owner(client: mio.Session, i: int) -> None:
        payload = rng.randbytes(rng.choice([100, 50_000, 300_000]))
        async with await client.open_stream() as stream:  # reset on cancellation
            stream.write(payload)  # usually more than the window: partly sent
            drainer = asyncio.ensure_future(drain_then_eof(stream))
            try:
                got = await stream.readexactly(len(payload))
                await drainer
            finally:
                drainer.cancel()
                await asyncio.gather(drainer, return_exceptions=True)
            assert got == payload
            assert await stream.read() == b""
        completed.append(i)

    async def drain_then_eof(stream: mio.Stream) -> None:
        if rng.random() < 0.5:
            await stream.drain()  # a cancellation point while the write is partly sent
        stream.write_eof()

    client_config = SMALL.replace(max_streams=12)  # many owners wait in open_stream()
    async with mio_pair(echo, config=SMALL, client_config=client_config) as (client, server):
        for _round in range(3):
            tasks = [asyncio.ensure_future(owner(client, i)) for i in range(40)]
            loop = asyncio.get_running_loop()
            for task in rng.sample(tasks, 20):
                loop.call_later(rng.uniform(0, 0.05), task.cancel)
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
            for task, result in zip(tasks, results, strict=True):
                if task.cancelled():
                    continue
                assert result is None, repr(result)
            # Every stream is gone on both sides: reset (cancelled) or finished.
            await eventually(lambda: client.stream_count == 0 and server.stream_count == 0)
            assert not client.is_closed
            assert not server.is_closed
            await checksum_transfer(client)
        assert len(completed) >= 20
    await settle_tasks(baseline)


async def test_cancelled_accepts_at_random_points_lose_no_stream() -> None:
    rng = random.Random(5)
    n = 200
    async with mio_pair(None) as (client, server):

        async def opener() -> None:
            for i in range(n):
                stream = await client.open_stream()
                stream.write(b"%d" % i)
                stream.write_eof()
                await asyncio.sleep(rng.choice([0, 0, 0.001]))

        opening = asyncio.ensure_future(opener())
        accepted: list[mio.Stream] = []
        cancelled = 0
        loop = asyncio.get_running_loop()
        while len(accepted) < n:
            task = asyncio.ensure_future(server.accept_stream())
            when = rng.choice([0, 0, 0.0005, 0.002, None])
            if when == 0:
                loop.call_soon(task.cancel)
            elif when is not None:
                loop.call_later(when, task.cancel)
            try:
                accepted.append(await asyncio.wait_for(task, WAIT))
            except asyncio.CancelledError:
                cancelled += 1
        await opening
        assert cancelled > 20
        payloads = sorted([int(await s.read()) for s in accepted])
        assert payloads == list(range(n))  # each stream accepted exactly once
        assert not server._accept_queue
        for s in accepted:
            s.close()
        await eventually(lambda: client.stream_count == 0 and server.stream_count == 0)


async def test_accept_cancelled_after_being_woken_loses_no_stream() -> None:
    # The stream arrives (the waiter's future is resolved) and the accepting task is
    # cancelled before it runs again: the stream must stay queued for the next accept.
    client, server = mio.pipe()
    try:
        task = asyncio.ensure_future(server.accept_stream())
        await asyncio.sleep(0)  # the task waits
        server._on_frame(0x0C, 1, 65536)  # OPEN 1 arrives, synchronously
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stream = await asyncio.wait_for(server.accept_stream(), WAIT)
        assert stream.id == 1
        assert server.stream_count == 1
    finally:
        client.close()
        server.close()


# --------------------------------------------------------------------------------------------
# Keepalive and idle timeout.

LIVE = mio.Config(keepalive_interval=0.1, idle_timeout=0.5)


async def test_black_holed_peer_is_closed_by_idle_timeout() -> None:
    held: dict[int, mio.Stream] = {}

    async def hold(stream: mio.Stream) -> None:
        held[stream.id] = stream
        await asyncio.Event().wait()

    async with mio_server(hold, LIVE) as server, raw_peer(server.port) as peer:
        peer.send(open_(1) + data(1, b"then silence"))
        await peer.flush()
        await eventually(lambda: 1 in held)
        # The peer stops sending (its socket stays open, it even keeps reading).
        await peer.wait_eof(timeout=WAIT)
        session = held[1].session
        assert session.is_closed
        error = session.close_error
        assert isinstance(error, mio.SessionClosedError)
        assert "idle timeout" in str(error)
        assert await held[1].read(100) == b"then silence"
        with pytest.raises(mio.SessionClosedError, match="idle timeout"):
            await held[1].read(100)
        # While idle, mio itself sent keepalives (session WINDOW UPDATE 0), never a FIN.
        assert (SWND, 0, 0) in peer.frames
        assert not peer.of_kind(FIN)


SILENCE = 4  # idle timeouts of application silence the keepalive tests last, at least


async def test_keepalive_sessions_are_never_killed() -> None:
    loop = asyncio.get_running_loop()
    async with mio_pair(echo, config=LIVE) as (client, server):
        start = loop.time()
        assert LIVE.idle_timeout is not None
        while loop.time() - start < SILENCE * LIVE.idle_timeout:  # no application traffic
            await asyncio.sleep(0.05)
            assert not client.is_closed
            assert not server.is_closed
        await checksum_transfer(client, 100_000)


@pytest.mark.parametrize("traffic", ["data", "keepalive"])
async def test_busy_raw_peer_is_never_killed(traffic: str) -> None:
    async with mio_server(echo, LIVE) as server, raw_peer(server.port) as peer:
        peer.send(open_(1))
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert LIVE.idle_timeout is not None
        i = 0
        while loop.time() - start < SILENCE * LIVE.idle_timeout:  # nothing else is sent
            peer.send(data(1, b"%d," % i) if traffic == "data" else swnd(0))
            await peer.flush()
            await asyncio.sleep(0.05)
            i += 1
        await peer.echo(3, b"still alive")
        assert not peer.eof
        assert not peer.of_kind(FIN)
        (session,) = server.sessions
        assert not session.is_closed


class NullTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()

    def write(self, data: Any) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def test_idle_session_sends_a_keepalive_every_interval() -> None:
    # Deterministic: drive the keepalive timer by hand. The keepalive mio itself sent must
    # not count as "traffic" that makes the next tick skip its keepalive: with
    # keepalive_interval = idle_timeout / 2 that would leave the peer's idle timer to expire.
    config = mio.Config(keepalive_interval=1000, idle_timeout=2000)
    session = mio.Session(client=True, config=config)
    transport = NullTransport()
    session.connection_made(transport)
    keepalive = bytes(8)[:7] + bytes([SWND])
    for tick in range(1, 6):
        session._keepalive_tick()
        for _ in range(3):
            await asyncio.sleep(0)
        assert transport.out == keepalive * tick, f"tick {tick}"
    session.close()
    session.connection_lost(None)


# --------------------------------------------------------------------------------------------
# No data lost.


async def test_no_data_lost_with_half_closes_and_resets_of_other_streams() -> None:
    """100 concurrent streams of checksummed traffic in three shapes (echo, download,
    upload), with random half-close orders; a fifth of them are reset mid-transfer, by either
    side. Every stream that was not reset delivers every byte exactly once, in order."""
    rng = random.Random(77)
    baseline = set(asyncio.all_tasks())

    async def server_side(stream: mio.Stream) -> None:
        line = await stream.readline()
        mode, size, seed = line.split()
        size_i, seed_i = int(size), int(seed)
        if mode == b"echo":
            while chunk := await stream.read(rng.choice([100, 5000, 70_000])):
                stream.write(chunk)
                await stream.drain()
        elif mode == b"download":
            payload = random.Random(seed_i).randbytes(size_i)
            for i in range(0, size_i, 7000):
                stream.write(payload[i : i + 7000])
                await stream.drain()
            assert await stream.read() == b""  # the client half-closed long ago
        elif mode in (b"upload", b"kill"):
            digest = hashlib.sha256()
            while chunk := await stream.read(65536):
                digest.update(chunk)
            stream.write(digest.digest())
        elif mode == b"die":
            await stream.readexactly(size_i // 2)
            stream.reset(mio.ErrorCode.INTERNAL_ERROR)

    async def client_side(client: mio.Session, i: int) -> str:
        mode = rng.choices([b"echo", b"download", b"upload", b"die", b"kill"], [3, 3, 3, 1, 1])[0]
        size = rng.choice([0, 1, 1000, 30_000, 150_000])
        if mode in (b"die", b"kill"):
            size = max(size, 20_000)
        seed = rng.randrange(1 << 30)
        payload = random.Random(seed).randbytes(size)
        stream = await client.open_stream()
        stream.write(b"%s %d %d\n" % (mode, size, seed))
        if mode == b"download":
            stream.write_eof()  # our half-close first; the server's direction continues
            got = await stream.read()
            assert got == payload, f"stream {stream.id}: download corrupted"
            return "ok"

        async def send() -> None:
            step = rng.choice([1000, 4096, 50_000])
            for j in range(0, size, step):
                stream.write(payload[j : j + step])
                await stream.drain()
                if mode == b"kill" and j + step >= size // 3:
                    stream.reset(mio.ErrorCode.INTERNAL_ERROR)
                    return
            stream.write_eof()

        sender = asyncio.ensure_future(send())
        try:
            got = await stream.read()
            await sender
        except mio.StreamResetError:
            await asyncio.gather(sender, return_exceptions=True)
            assert mode in (b"die", b"kill"), f"stream {stream.id} ({mode!r}) was reset"
            return "reset"
        if mode == b"echo":
            assert got == payload, f"stream {stream.id}: echo corrupted"
        elif mode == b"upload":
            assert got == hashlib.sha256(payload).digest(), f"stream {stream.id}: upload lost data"
        else:
            raise AssertionError(f"stream {stream.id} ({mode!r}) ended without a reset")
        return "ok"

    config = SMALL.replace(max_frame_size=1500)
    async with mio_pair(server_side, config=config) as (client, server):
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(client_side(client, i) for i in range(100))), 40
        )
        assert outcomes.count("ok") >= 70
        assert outcomes.count("reset") >= 5
        await eventually(lambda: client.stream_count == 0 and server.stream_count == 0)
        assert not client.is_closed
    await settle_tasks(baseline)
