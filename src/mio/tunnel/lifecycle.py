"""Process lifecycle: readiness lines, signals, and draining connections on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from .pipe import PipeAborted, Pipes

__all__ = ("announce", "Tracker", "install_signal_handlers", "on_sighup")

log = logging.getLogger("mio.tunnel")


def announce(line: str) -> None:
    """Print a machine-readable readiness line on stdout (flushed at once)."""
    try:
        print(line, flush=True)
    except (OSError, ValueError):  # stdout closed: nobody is waiting for the line
        pass
    log.info("%s", line)


class Tracker:
    """The connections being served, so that shutdown can let them finish (or not): the
    tasks setting them up, and the :class:`~.pipe.Pipes` carrying them once set up (which
    hold no task)."""

    def __init__(self, pipes: Pipes | None = None) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self.pipes = pipes if pipes is not None else Pipes()

    def __len__(self) -> int:
        return len(self._tasks) + len(self.pipes)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the current task as a live connection while the ``with`` block runs."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    async def drain(self, grace: float, hurry: asyncio.Event | None = None) -> int:
        """Wait up to ``grace`` seconds (or until ``hurry``) for the tracked tasks and
        pipes, then cancel the tasks and abort the pipes left. Returns how many."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        hurry_task = loop.create_task(hurry.wait()) if hurry is not None else None
        try:
            while len(self) and not (hurry is not None and hurry.is_set()):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                waiting: set[asyncio.Future[Any]] = set(self._tasks)
                if len(self.pipes):
                    waiting.add(self.pipes.wait_empty())
                if hurry_task is not None:
                    waiting.add(hurry_task)
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if hurry_task is not None:
                hurry_task.cancel()
                await asyncio.gather(hurry_task, return_exceptions=True)
        left = list(self._tasks)
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
        # (a cancelled task may have started a pipe just before: abort after the tasks)
        return len(left) + self.pipes.abort_all(PipeAborted("shutting down"))


def install_signal_handlers(
    stop: asyncio.Event, hurry: asyncio.Event, grace: float
) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop`` (graceful shutdown); a second one sets ``hurry``.

    Returns a function that removes the handlers. Where the loop cannot install signal
    handlers (Windows), Ctrl-C ends the process through ``KeyboardInterrupt`` instead.
    """
    loop = asyncio.get_running_loop()
    installed: list[int] = []

    def on_signal(name: str) -> None:
        if stop.is_set():
            log.warning("%s again: stopping now", name)
            hurry.set()
        else:
            log.info("%s: shutting down, letting connections finish for up to %g s", name, grace)
            stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
            continue
        installed.append(sig)

    def remove() -> None:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    return remove


def on_sighup(reload: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run ``reload()`` as a task on every SIGHUP (one at a time; a SIGHUP during a reload
    runs it once more afterwards). Returns a function that removes the handler; where
    there is no SIGHUP (Windows) nothing is installed."""
    loop = asyncio.get_running_loop()
    sighup = getattr(signal, "SIGHUP", None)
    state: dict[str, Any] = {"task": None, "again": False}

    def run() -> None:
        task = loop.create_task(reload())
        state["task"] = task
        task.add_done_callback(done)

    def done(_: object) -> None:
        state["task"] = None
        if state["again"]:
            state["again"] = False
            run()

    def on_signal() -> None:
        log.info("SIGHUP: reloading the configuration")
        if state["task"] is not None:
            state["again"] = True
        else:
            run()

    if sighup is None:  # pragma: no cover - Windows
        return lambda: None
    try:
        loop.add_signal_handler(sighup, on_signal)
    except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
        return lambda: None

    def remove() -> None:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sighup)
        task = state["task"]
        if task is not None:
            task.cancel()

    return remove
