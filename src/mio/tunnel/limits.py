"""Admission limits of the relay: connection counts per key, failed-auth rate limiting,
and log lines that summarise instead of repeating.

* :class:`Counter` -- how many connections each key (a public port, a source address) holds,
  refusing one more past a limit;
* :class:`FailureLimiter` -- at most ``limit`` failed authentications per source address per
  ``interval`` seconds; past that, the address is refused until its interval ends;
* :class:`SummaryLog` -- one line at the first event, then at most one line per interval
  with the count since the previous line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from .._summarylog import SummaryLog

__all__ = ("Counter", "FailureLimiter", "SummaryLog", "LOG_INTERVAL")

#: Seconds between two summary lines of one kind.
LOG_INTERVAL = 10.0


class Counter:
    """Live connections per key, at most ``limit`` per key (None: unlimited)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._counts: dict[Hashable, int] = {}

    def __getitem__(self, key: Hashable) -> int:
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        """Keys holding at least one connection."""
        return len(self._counts)

    def acquire(self, key: Hashable) -> bool:
        """Count one more connection for ``key``; False (and nothing counted) at the limit."""
        count = self._counts.get(key, 0)
        if self.limit is not None and count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: Hashable) -> None:
        """One connection of ``key`` ended."""
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)


class FailureLimiter:
    """Failed authentications per source address, in fixed windows of ``interval`` seconds.

    An address with ``limit`` failures in its current window is :meth:`blocked` until the
    window ends. At most ``max_addresses`` addresses are remembered (the oldest windows are
    forgotten first), so memory stays bounded whatever the number of attackers.
    """

    def __init__(
        self,
        limit: int,
        interval: float,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or interval <= 0:
            raise ValueError("FailureLimiter needs limit >= 1 and interval > 0")
        self.limit = limit
        self.interval = interval
        self.max_addresses = max_addresses
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def blocked(self, address: str) -> bool:
        """True while ``address`` has used up its failures of the current window."""
        window = self._windows.get(address)
        if window is None:
            return False
        start, count = window
        if self._clock() - start >= self.interval:
            del self._windows[address]
            return False
        return count >= self.limit

    def failed(self, address: str) -> None:
        """Count one failed authentication of ``address``."""
        now = self._clock()
        window = self._windows.pop(address, None)
        if window is None or now - window[0] >= self.interval:
            window = (now, 0)
        self._windows[address] = (window[0], window[1] + 1)  # newest last
        if len(self._windows) > self.max_addresses:
            for key in [k for k, (s, _) in self._windows.items() if now - s >= self.interval]:
                del self._windows[key]
            while len(self._windows) > self.max_addresses:
                del self._windows[next(iter(self._windows))]
