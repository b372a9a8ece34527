"""Pure-Python twin of :mod:`mio._window`: per-stream flow-control accounting.

This module and the compiled ``_window.pyx`` must behave identically; the test suite runs
every window test against both.
"""

from __future__ import annotations

from operator import index as _index

from .errors import FlowControlError
from .wire import MAX_WINDOW

__all__ = ("SendWindow", "RecvWindow")

# Integer arguments go through ``operator.index`` (``PyNumber_Index`` in the compiled
# module): a float is a TypeError in both implementations.


class SendWindow:
    """Credit this side may still send on a stream.

    Starts at the stream's initial window; :meth:`reserve` takes credit for bytes about to be
    sent and :meth:`grow` adds the increment of a received WINDOW UPDATE.
    """

    __slots__ = ("_available",)

    def __init__(self, initial: int) -> None:
        initial = _index(initial)
        if not 0 <= initial <= MAX_WINDOW:
            raise ValueError(f"initial window {initial} out of range 0..{MAX_WINDOW}")
        self._available = initial

    @property
    def available(self) -> int:
        """Bytes that may be sent now."""
        return self._available

    def reserve(self, n: int) -> int:
        """Take up to ``n`` bytes of credit; return how many may be sent now (maybe 0)."""
        n = _index(n)
        if n < 0:
            raise ValueError("cannot reserve a negative number of bytes")
        avail = self._available
        if n > avail:
            n = avail
        self._available = avail - n
        return n

    def grow(self, increment: int) -> int:
        """Add a received window increment; return the new available credit.

        Raises:
            FlowControlError: the window would exceed the protocol limit ``MAX_WINDOW``.
        """
        increment = _index(increment)
        if increment < 0:
            raise ValueError("window increment must not be negative")
        new = self._available + increment
        if new > MAX_WINDOW:
            raise FlowControlError(
                f"window update of {increment} overflows the send window "
                f"({self._available} + {increment} > {MAX_WINDOW})"
            )
        self._available = new
        return new


class RecvWindow:
    """Receive-side accounting of one stream, with batched updates and auto-tuning.

    The peer may have at most ``window`` bytes in flight (received but not yet announced
    as consumed). :meth:`receive` accounts arriving bytes and raises on a violation;
    :meth:`consume` accounts bytes the application read and returns the increment to
    announce, batched: an update is due only once at least half the window was consumed.

    Auto-tuning (receiver-side slow start): when an update is due and the application has
    kept up (at most a quarter of the window is still buffered unread), the window doubles,
    up to ``max_window``, and the growth is added to the increment. A reader that keeps up
    is what makes a larger window pay off; the receiver cannot see how much of the window
    sits in the network's buffers, so it does not wait for the sender to look blocked. A
    lagging reader stops the growth. Memory per stream stays bounded by ``max_window``.
    """

    __slots__ = ("_available", "_buffered", "_max_window", "_pending", "_window")

    def __init__(self, initial: int, max_window: int | None = None) -> None:
        initial = _index(initial)
        if max_window is None:
            max_window = initial
        max_window = _index(max_window)
        if not 0 < initial <= MAX_WINDOW:
            raise ValueError(f"initial window {initial} out of range 1..{MAX_WINDOW}")
        if not initial <= max_window <= MAX_WINDOW:
            raise ValueError(f"max window {max_window} out of range {initial}..{MAX_WINDOW}")
        self._window = initial
        self._max_window = max_window
        self._available = initial
        self._buffered = 0
        self._pending = 0

    @property
    def window(self) -> int:
        """Current window size (grows with auto-tuning)."""
        return self._window

    @property
    def max_window(self) -> int:
        """Ceiling of auto-tuning."""
        return self._max_window

    @property
    def available(self) -> int:
        """Bytes the peer may still send before its window is exhausted."""
        return self._available

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed by the application."""
        return self._buffered

    @property
    def pending(self) -> int:
        """Bytes consumed but not yet announced to the peer."""
        return self._pending

    def receive(self, n: int) -> None:
        """Account ``n`` received payload bytes.

        Raises:
            FlowControlError: the peer sent more than its window allows.
        """
        n = _index(n)
        if n < 0:
            raise ValueError("cannot receive a negative number of bytes")
        avail = self._available
        if n > avail:
            raise FlowControlError(f"peer sent {n} bytes with only {avail} bytes of window left")
        avail -= n
        self._available = avail
        self._buffered += n

    def consume(self, n: int) -> int:
        """Account ``n`` bytes read by the application; return the increment to send, or 0."""
        n = _index(n)
        if not 0 <= n <= self._buffered:
            raise ValueError(f"cannot consume {n} bytes, {self._buffered} are buffered")
        self._buffered -= n
        pending = self._pending + n
        window = self._window
        if pending < (window >> 1) or pending == 0:
            self._pending = pending
            return 0
        if self._buffered <= (window >> 2) and window < self._max_window:
            grown = window << 1
            if grown > self._max_window:
                grown = self._max_window
            pending += grown - window
            self._window = grown
        self._available += pending
        self._pending = 0
        return pending

    def flush(self) -> int:
        """Announce every consumed byte now (e.g. when the reader waits); return the increment."""
        pending = self._pending
        self._available += pending
        self._pending = 0
        return pending
