"""Batched wake-ups (``mio._wakeup_batch``): on asyncio's own loop, the callbacks a session
schedules when it completes a read or starts a handler task run from one loop callback per
batch, and nothing an application can see changes (current task, contexts, errors, the
loop object itself)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from session_util import mio_pair

import mio
from mio._wakeup_batch import WakeupBatch

REQUESTS = 64


@contextmanager
def counting_callbacks(loop: asyncio.AbstractEventLoop) -> Iterator[list[int]]:
    """Count the callbacks scheduled on ``loop`` (every ``call_soon`` ends in ``_call_soon``)."""
    count = [0]
    real = loop._call_soon  # type: ignore[attr-defined]

    def counted(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    loop._call_soon = counted  # type: ignore[attr-defined]
    try:
        yield count
    finally:
        del loop._call_soon  # type: ignore[attr-defined]


async def _requests(client: mio.Session) -> None:
    async def one(i: int) -> None:
        stream = await client.open_stream()
        stream.write(b"%d" % i)
        stream.write_eof()
        assert await stream.read() == b"%d" % i

    await asyncio.gather(*(one(i) for i in range(REQUESTS)))


async def test_sessions_batch_only_on_asyncio_s_own_loop(loop_kind: str) -> None:
    async with mio_pair() as (client, server):
        batched = loop_kind == "asyncio"
        assert (client._wakeups is not None) is batched
        assert (server._wakeups is not None) is batched
        await _requests(client)


async def test_requests_schedule_far_fewer_loop_callbacks_when_batched() -> None:
    loop = asyncio.get_running_loop()
    async with mio_pair() as (client, server):
        await _requests(client)  # warm up: both sessions settled
        with counting_callbacks(loop) as batched:
            await _requests(client)
        client._wakeups = server._wakeups = None  # as on a loop that does not batch
        with counting_callbacks(loop) as unbatched:
            await _requests(client)
    # Unbatched, every request schedules its handler's first step and its reader's
    # wake-up; batched, one callback per session and read carries many of them (what is
    # left is the test's own tasks and gather()).
    assert unbatched[0] - batched[0] >= 1.5 * REQUESTS, (batched[0], unbatched[0])
    assert "call_soon" not in vars(loop)  # the loop is left as it was found


_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="unset")


async def test_handlers_keep_their_task_and_context(loop_kind: str) -> None:
    seen: list[tuple[bool, str]] = []

    async def handler(stream: mio.Stream) -> None:
        # The first step runs in the batch: it must still be inside its own task
        # (asyncio.timeout needs one) and its own copy of the context.
        async with asyncio.timeout(10):
            task = asyncio.current_task()
            seen.append((task is not None and not task.done(), _var.get()))
            _var.set(f"stream {stream.id}")
            data = await stream.read()
            stream.write(data + _var.get().encode())

    _var.set("connection")
    async with mio_pair(handler) as (client, _):
        streams = [await client.open_stream() for _ in range(8)]
        for stream in streams:
            stream.write(b"x")
            stream.write_eof()
        answers = [await stream.read() for stream in streams]
    assert answers == [b"x" + f"stream {s.id}".encode() for s in streams]
    # No handler saw another one's value: each ran in a copy of the server's context.
    assert seen == [(True, "connection")] * 8
    assert _var.get() == "connection"


async def test_a_cancelled_reader_woken_in_a_batch_raises_cancelled() -> None:
    async with mio_pair() as (client, _):
        assert client._wakeups is not None
        stream = await client.open_stream()
        reader = asyncio.ensure_future(stream.read(1))
        await asyncio.sleep(0)

        class CancelAfterWake(WakeupBatch):
            __slots__ = ()

            def wake(self, fut: asyncio.Future[None]) -> None:
                super().wake(fut)  # the echo completes the read in a batch...
                reader.cancel()  # ...and the task is cancelled before the batch runs it

        client._wakeups = CancelAfterWake(asyncio.get_running_loop())
        stream.write(b"a")
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert await stream.read(1) == b"a"  # nothing was lost
        stream.close()


async def test_a_failing_callback_is_reported_and_the_others_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, ctx: reported.append(ctx))
    batch = WakeupBatch(loop)
    ran: list[str] = []

    def boom(_: object) -> None:
        raise ValueError("boom")

    first, second = loop.create_future(), loop.create_future()
    first.add_done_callback(boom)
    second.add_done_callback(lambda _: ran.append("second"))
    batch.wake(first)
    batch.wake(second)
    assert ran == []
    assert "call_soon" not in vars(loop)
    await asyncio.sleep(0)
    assert ran == ["second"]
    assert len(reported) == 1
    assert isinstance(reported[0]["exception"], ValueError)


def test_a_loop_stopping_in_a_batch_keeps_the_rest_scheduled() -> None:
    loop = asyncio.new_event_loop()
    try:
        batch = WakeupBatch(loop)
        ran: list[str] = []

        def stop(_: object) -> None:
            raise KeyboardInterrupt

        first, second = loop.create_future(), loop.create_future()
        first.add_done_callback(stop)
        second.add_done_callback(lambda _: ran.append("second"))
        batch.wake(first)
        batch.wake(second)
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(asyncio.sleep(0.01))
        assert ran == []
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == ["second"]
    finally:
        loop.close()


async def test_debug_mode_schedules_as_asyncio_does() -> None:
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    try:
        batch = WakeupBatch(loop)
        fut = loop.create_future()
        fut.add_done_callback(lambda _: None)
        with counting_callbacks(loop) as count:
            batch.wake(fut)
        assert count[0] == 1
        assert batch._steps is None
        await asyncio.sleep(0)
    finally:
        loop.set_debug(False)


def test_usable_only_where_call_soon_is_asyncio_s() -> None:
    class Custom(asyncio.SelectorEventLoop):
        def call_soon(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            return super().call_soon(*args, **kwargs)

    plain, custom, patched = asyncio.new_event_loop(), Custom(), asyncio.new_event_loop()
    patched.call_soon = patched.call_soon  # type: ignore[method-assign]  # e.g. a debugging aid
    try:
        assert WakeupBatch.usable(plain)
        assert not WakeupBatch.usable(custom)
        assert not WakeupBatch.usable(patched)
    finally:
        for loop in (plain, custom, patched):
            loop.close()
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        assert not WakeupBatch.usable(loop)
    finally:
        loop.close()
