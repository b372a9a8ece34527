"""Memory budgets: the bytes mio holds on a peer's behalf, counted where they are held.

A window is a promise, not an allocation: a reference peer promises 0xFFFFFF bytes on each
of its 1000 streams while holding a few bytes in each. mio therefore never bounds memory by
summing windows. Each :class:`~mio.Session` counts what it actually holds for its peer:

* **inbound**: payload received and not yet read by the application (streams in the accept
  queue included);
* **answers**: control frames (RST, window updates, refusals) queued while the transport
  does not accept more output;
* **outbound**: data the application wrote that has not reached the kernel yet (queued in
  streams, in the session's output buffer and in the transport's write buffer).

Inbound bytes count against ``Config.max_session_memory`` and, when the session was given
one, against a shared :class:`MemoryBudget` (every :class:`~mio.Server` has one for all its
sessions). Over either limit the session stops reading from its transport (TCP
backpressure) until the application has read enough; see docs/PROTOCOL.md ("Memory") for
the whole policy. Outbound bytes are the application's own writes: they are reported
(``Session.stats``) and make ``drain()`` wait, but never stop reading, because the
window updates that let them leave arrive on the same connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import Session

__all__ = ("MemoryBudget",)

#: Default shared budget of a :class:`~mio.Server`: 1 GiB of unread inbound data over all of
#: its sessions (16 sessions at the 64 MiB per-session default, or many more small ones).
DEFAULT_SERVER_MEMORY = 1024 * 1024 * 1024


class MemoryBudget:
    """A memory cap shared by many sessions (for example every session of one process).

    Pass one to :func:`mio.serve` (``budget=``), :func:`mio.connect` or :class:`mio.Session`;
    a server without one makes its own of :data:`DEFAULT_SERVER_MEMORY`. Each session charges
    the unread inbound data it holds; when the total reaches ``limit`` every session holding
    more than its share (``limit`` divided by the sessions sharing the budget) stops reading
    from its transport, and they resume once the total is back under three quarters of
    ``limit``. Sessions under their share keep reading, so one peer filling the budget never
    stalls the others; the total therefore stays under twice ``limit``.

    Args:
        limit: the cap in bytes (positive).
    """

    __slots__ = ("_held", "_limit", "_paused", "_peak", "_sessions")

    def __init__(self, limit: int = DEFAULT_SERVER_MEMORY) -> None:
        if limit < 1:
            raise ValueError("a memory budget must be positive")
        self._limit = int(limit)
        self._held = 0
        self._peak = 0
        self._paused: set[Session] = set()
        self._sessions: set[Session] = set()

    @property
    def limit(self) -> int:
        """The cap in bytes."""
        return self._limit

    @property
    def held(self) -> int:
        """Bytes currently charged by the sessions sharing this budget."""
        return self._held

    @property
    def peak(self) -> int:
        """The highest :attr:`held` seen so far."""
        return self._peak

    @property
    def sessions(self) -> int:
        """Sessions currently charging this budget."""
        return len(self._sessions)

    def __repr__(self) -> str:
        return f"<mio.MemoryBudget held={self._held} limit={self._limit}>"

    # ---------------------------------------------------------------- session side
    def _attach(self, session: Session) -> None:
        self._sessions.add(session)

    def _detach(self, session: Session, charged: int) -> None:
        self._sessions.discard(session)
        self._paused.discard(session)
        self._adjust(-charged)

    def _adjust(self, delta: int) -> None:
        held = self._held + delta
        self._held = held
        if held > self._peak:
            self._peak = held
        elif self._paused and delta < 0 and held <= (self._limit * 3) >> 2:
            paused, self._paused = self._paused, set()
            for session in paused:
                session._budget_resumed()

    @property
    def _over(self) -> bool:
        return self._held >= self._limit

    @property
    def _fair_share(self) -> int:
        """What each session may hold even when the budget is full: ``limit / sessions``."""
        return self._limit // max(1, len(self._sessions))

    def _pause(self, session: Session) -> None:
        self._paused.add(session)

    def _shed(self) -> bool:
        """Reset the unread stream holding the most, over every session; False if none."""
        best = None
        most = 0
        for session in self._sessions:
            stream = session._largest_unread()
            if stream is not None and stream._size > most:
                best, most = stream, stream._size
        if best is None:
            return False
        best._session._shed_stream(best)
        return True
