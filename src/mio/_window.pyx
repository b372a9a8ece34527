# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled per-stream flow-control accounting. Its pure-Python twin is :mod:`mio._window_py`.

Both must behave identically (the test suite runs every window test against each).
"""

cimport cython
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.number cimport PyNumber_Index
from libc.stdint cimport int64_t

from .errors import FlowControlError
from .wire import MAX_WINDOW

__all__ = ("SendWindow", "RecvWindow")

# Integer arguments go through ``PyNumber_Index`` (``operator.index`` in the twin): a
# float is a TypeError in both implementations instead of being truncated here.

cdef enum:
    C_MAX_WINDOW = 0x7FFFFFFF

# Stands for any integer outside int64 in the range checks below (which all bound values
# within 0..2**31): C comparisons give the same verdicts as Python's on the real value.
cdef int64_t C_HUGE = (<int64_t>1) << 62


cdef inline int64_t _clamp(object i) except? -1:
    """The value of the Python int ``i`` (already ``PyNumber_Index``-ed), or +/-``C_HUGE``
    if it does not fit in 64 bits."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(i, &overflow)
    if overflow > 0:
        return C_HUGE
    if overflow < 0:
        return -C_HUGE
    return v


@cython.final
@cython.freelist(64)
cdef class SendWindow:
    """Credit this side may still send on a stream.

    Starts at the stream's initial window; :meth:`reserve` takes credit for bytes about to be
    sent and :meth:`grow` adds the increment of a received WINDOW UPDATE.
    """

    cdef int64_t _available

    def __init__(self, initial):
        initial = PyNumber_Index(initial)
        cdef int64_t v = _clamp(initial)
        if not 0 <= v <= C_MAX_WINDOW:
            raise ValueError(f"initial window {initial} out of range 0..{MAX_WINDOW}")
        self._available = v

    @property
    def available(self):
        """Bytes that may be sent now."""
        return self._available

    def reserve(self, n):
        """Take up to ``n`` bytes of credit; return how many may be sent now (maybe 0)."""
        cdef int64_t k = _clamp(PyNumber_Index(n))
        if k < 0:
            raise ValueError("cannot reserve a negative number of bytes")
        cdef int64_t take
        if k > self._available:
            take = self._available
        else:
            take = k
        self._available -= take
        return take

    def grow(self, increment):
        """Add a received window increment; return the new available credit.

        Raises:
            FlowControlError: the window would exceed the protocol limit ``MAX_WINDOW``.
        """
        increment = PyNumber_Index(increment)
        cdef int64_t k = _clamp(increment)
        if k < 0:
            raise ValueError("window increment must not be negative")
        if k > C_MAX_WINDOW - self._available:
            raise FlowControlError(
                f"window update of {increment} overflows the send window "
                f"({self._available} + {increment} > {MAX_WINDOW})"
            )
        self._available += k
        return self._available


@cython.final
@cython.freelist(64)
cdef class RecvWindow:
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

    cdef int64_t _window
    cdef int64_t _max_window
    cdef int64_t _available
    cdef int64_t _buffered
    cdef int64_t _pending

    def __init__(self, initial, max_window=None):
        initial = PyNumber_Index(initial)
        if max_window is None:
            max_window = initial
        max_window = PyNumber_Index(max_window)
        cdef int64_t i = _clamp(initial)
        cdef int64_t m = _clamp(max_window)
        if not 0 < i <= C_MAX_WINDOW:
            raise ValueError(f"initial window {initial} out of range 1..{MAX_WINDOW}")
        if not i <= m <= C_MAX_WINDOW:
            raise ValueError(f"max window {max_window} out of range {initial}..{MAX_WINDOW}")
        self._window = i
        self._max_window = m
        self._available = i
        self._buffered = 0
        self._pending = 0

    @property
    def window(self):
        """Current window size (grows with auto-tuning)."""
        return self._window

    @property
    def max_window(self):
        """Ceiling of auto-tuning."""
        return self._max_window

    @property
    def available(self):
        """Bytes the peer may still send before its window is exhausted."""
        return self._available

    @property
    def buffered(self):
        """Bytes received and not yet consumed by the application."""
        return self._buffered

    @property
    def pending(self):
        """Bytes consumed but not yet announced to the peer."""
        return self._pending

    def receive(self, n):
        """Account ``n`` received payload bytes.

        Raises:
            FlowControlError: the peer sent more than its window allows.
        """
        n = PyNumber_Index(n)
        cdef int64_t k = _clamp(n)
        if k < 0:
            raise ValueError("cannot receive a negative number of bytes")
        if k > self._available:
            raise FlowControlError(
                f"peer sent {n} bytes with only {self._available} bytes of window left"
            )
        self._available -= k
        self._buffered += k

    def consume(self, n):
        """Account ``n`` bytes read by the application; return the increment to send, or 0."""
        n = PyNumber_Index(n)
        cdef int64_t k = _clamp(n)
        cdef int64_t grown
        if not 0 <= k <= self._buffered:
            raise ValueError(f"cannot consume {n} bytes, {self._buffered} are buffered")
        self._buffered -= k
        cdef int64_t pending = self._pending + k
        cdef int64_t window = self._window
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

    def flush(self):
        """Announce every consumed byte now (e.g. when the reader waits); return the increment."""
        cdef int64_t pending = self._pending
        self._available += pending
        self._pending = 0
        return pending
