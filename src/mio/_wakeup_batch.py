"""Wake-ups batched into one loop callback, on asyncio's own event loop.

asyncio's ``BaseEventLoop.call_soon`` is Python code: each callback it schedules costs
``call_soon``, ``_check_closed``, ``_call_soon``, a ``Handle`` (whose ``__init__`` asks
``get_debug()``) and a turn of the ready queue: about 2,000 instructions on CPython 3.11.
A session causes one such callback for every read it completes (the reader's task wakes
up) and for every handler task it starts. Batched, they cost mio 111.5k instead of 115.0k
instructions per W2 request and 64.1k instead of 67.9k per W3 round trip
(``benchmarks/instructions.sh``).

asyncio's Future and Task look ``call_soon`` up on their loop each time they schedule a
callback. While a session completes one of its own read futures or makes a handler task,
:class:`WakeupBatch` answers that lookup (an attribute of the loop object, removed right
after) and collects the callbacks; one real ``call_soon`` per batch runs them all on the
next loop iteration, in order, each in its own context, as the loop would have run them.
The futures are the session's own (no application code adds callbacks to them), and
completing a future only schedules its callbacks, so no other code sees the attribute.

Used only on a plain asyncio loop (``call_soon`` not overridden; uvloop's is C already)
and outside debug mode (whose ``call_soon`` checks the thread and records tracebacks).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ("WakeupBatch",)

_call_soon = asyncio.BaseEventLoop.call_soon
_Task = asyncio.Task

Step = tuple[Callable[..., object], tuple[Any, ...], contextvars.Context]


class WakeupBatch:
    """The callbacks one session's wake-ups schedule, run by one loop callback."""

    __slots__ = ("_capture", "_loop", "_steps")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop: Any = loop
        self._steps: list[Step] | None = None
        self._capture = self._add  # one bound method, reused

    @staticmethod
    def usable(loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``loop`` schedules through asyncio's own Python ``call_soon``."""
        return (
            isinstance(loop, asyncio.BaseEventLoop)
            and type(loop).call_soon is _call_soon
            and "call_soon" not in getattr(loop, "__dict__", {"call_soon": None})
        )

    def wake(self, fut: asyncio.Future[None]) -> None:
        """``fut.set_result(None)``, its callbacks (the reader's task) run in the batch."""
        loop = self._loop
        if loop._debug:
            fut.set_result(None)
            return
        loop.call_soon = self._capture
        try:
            fut.set_result(None)
        finally:
            del loop.call_soon

    def task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """``asyncio.Task(coro)``, its first step run in the batch."""
        loop = self._loop
        if loop._debug:
            return _Task(coro, loop=loop)
        loop.call_soon = self._capture
        try:
            return _Task(coro, loop=loop)
        finally:
            del loop.call_soon

    def _add(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> None:
        steps = self._steps
        if steps is None:
            steps = self._steps = []
            _call_soon(self._loop, self._run)
        if context is None:  # (an empty Context is falsy: compare with None)
            context = contextvars.copy_context()
        steps.append((callback, args, context))

    def _run(self) -> None:
        steps, self._steps = self._steps, None
        if steps is None:
            return
        pending = iter(steps)
        for callback, args, context in pending:
            try:
                context.run(callback, *args)
            except (SystemExit, KeyboardInterrupt):
                # The loop stops: what was not run yet stays scheduled, as in its queue.
                for rest, rest_args, rest_context in pending:
                    _call_soon(self._loop, rest, *rest_args, context=rest_context)
                raise
            except BaseException as exc:  # as asyncio.Handle._run reports it
                self._loop.call_exception_handler(
                    {"message": f"Exception in callback {callback!r}", "exception": exc}
                )
