"""A log line that cannot flood: the first event in full, then one summary per interval.

Used by the server's accept loop (:mod:`mio.api`: refused sessions, accept errors) and the
tunnel relay (:mod:`mio.tunnel.limits`: failed authentications, refusals).
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ("SummaryLog",)


class SummaryLog:
    """One WARNING at the first event, then at most one line per ``interval`` seconds with
    how many more events happened since the previous line (no line when none did).

    ``first`` is a %-format of the arguments given to :meth:`hit`; ``repeat`` a %-format
    of ``(count, interval)``. :attr:`total` counts every event.
    """

    def __init__(
        self, logger: logging.Logger, first: str, repeat: str, interval: float = 10.0
    ) -> None:
        self.logger = logger
        self.first = first
        self.repeat = repeat
        self.interval = interval
        self.total = 0
        self._pending = 0
        self._timer: asyncio.TimerHandle | None = None

    def hit(self, *args: object) -> None:
        self.total += 1
        if self._timer is not None:
            self._pending += 1
            return
        self.logger.warning(self.first, *args)
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._pending:
            self._flush()
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _flush(self) -> None:
        self.logger.warning(self.repeat, self._pending, self.interval)
        self._pending = 0

    def close(self) -> None:
        """Log what is pending and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self._flush()
