"""Load on one real TCP session: 10,000 streams leave nothing behind, and the reference
workload (1000 concurrent streams x 100 sequential echo round trips) on both codecs."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import TYPE_CHECKING

from session_util import codec_pair, eventually, mio_pair, no_new_tasks, pending_tasks

import mio

if TYPE_CHECKING:
    from conftest import Impl


def pending_futures() -> set[int]:
    gc.collect()
    return {id(o) for o in gc.get_objects() if isinstance(o, asyncio.Future) and not o.done()}


async def test_ten_thousand_streams_leave_nothing_behind() -> None:
    total, batch = 10_000, 200
    streams: weakref.WeakSet[mio.Stream] = weakref.WeakSet()
    served: list[int] = []

    async def handler(stream: mio.Stream) -> None:
        streams.add(stream)
        stream.write(await stream.read())
        served.append(stream.id)

    async def one(client: mio.Session, i: int) -> None:
        stream = await client.open_stream()
        streams.add(stream)
        payload = b"%d" % i
        stream.write(payload)
        stream.write_eof()
        assert await stream.read() == payload
        await stream.wait_closed()

    tasks_before = pending_tasks()
    async with mio_pair(handler) as (client, server):
        futures_before = pending_futures()
        for start in range(0, total, batch):
            await asyncio.gather(*(one(client, i) for i in range(start, start + batch)))
        await eventually(lambda: server.stream_count == 0 and len(served) == total)
        assert client.stream_count == 0
        assert not client._accept_queue
        assert not server._accept_queue
        assert not server._handler_tasks
        assert not client._recent_resets
        assert not server._recent_resets
        await no_new_tasks(tasks_before | pending_tasks())
        assert pending_futures() <= futures_before
        gc.collect()
        assert len(streams) == 0
        assert not client.is_closed
        assert not server.is_closed
    await no_new_tasks(tasks_before)


async def test_reference_workload(impl: Impl) -> None:
    """1000 concurrent streams, each doing 100 sequential echo round trips of b"Aa i-j"."""
    n_streams, n_trips = 1000, 100

    async def echo_lines(stream: mio.Stream) -> None:
        while line := await stream.readline():
            stream.write(line)
            await stream.drain()

    async def worker(client: mio.Session, i: int) -> None:
        stream = await client.open_stream()
        for j in range(n_trips):
            msg = b"Aa %d-%d\n" % (i, j)
            stream.write(msg)
            await stream.drain()
            assert await stream.readexactly(len(msg)) == msg
        stream.write_eof()
        assert await stream.read() == b""
        await stream.wait_closed()

    async with codec_pair(impl, echo_lines) as (client, server):
        await asyncio.gather(*(worker(client, i) for i in range(n_streams)))
        await eventually(lambda: client.stream_count == 0 and server.stream_count == 0)
        assert not client.is_closed
        assert not server.is_closed
