"""Protocol parameters of a session: one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses

from .wire import MAX_VALUE, MAX_WINDOW, REFERENCE_MAX_FRAME_SIZE

__all__ = ("Config",)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every tunable of a :class:`~mio.Session`, with documented defaults.

    Attributes:
        initial_window: receive window advertised in OPEN for the streams this side opens,
            per stream and per direction (the OPEN value is the initial window of both
            directions). 256 KiB: on loopback, 64 KiB, 256 KiB and 1 MiB gave the same bulk
            throughput and fairness within noise (auto-tuning grows a busy stream's window
            anyway), so the smaller worst case buffering won: 1000 streams x 256 KiB.
        max_window: auto-tuning ceiling of the receive window of a stream this side opened
            (or of a peer's stream whose OPEN window was smaller). 512 KiB: it bounds what one
            bulk stream queues ahead of other streams' small messages (in the kernel, in
            flight), so it sets their latency beside a bulk transfer. Measured on loopback
            (W4: p99 latency beside a bulk transfer ÷ the idle p99, 5 rounds, asyncio /
            uvloop): 1.17x / 1.29x at 512 KiB, 2.08x / 2.19x at 1 MiB (5x at 2 MiB, 25x at
            16 MiB), while bulk throughput alone (W1) stayed the same within noise
            (2,784 / 2,999 MB/s against 2,691 / 3,218 at 1 MiB); 256 KiB halves W1.
        max_open_window: largest window accepted in a peer's OPEN (the peer chooses the
            initial window of both directions); above it the stream is refused. The default
            admits the reference implementation's 0xFFFFFF.
        max_session_memory: most unread inbound data this session holds for its peer, over
            all streams (the accept queue included). Windows are promises, not allocations:
            an OPEN is admitted whatever its window (up to ``max_open_window``), and when
            the bytes actually held reach this limit the session stops reading from its
            transport until the application reads; a reader left waiting meanwhile makes
            the session reset the unread stream holding the most (``RESOURCE_LIMIT``), so
            the application never deadlocks (docs/PROTOCOL.md, "Memory"). 64 MiB: a stream
            whose reader keeps up holds at most its window, and a bulk stream needs its
            auto-tuned ``max_window`` (512 KiB, see ``max_window``), so 128 bulk streams read
            at full speed side by side while a peer
            filling streams nobody reads is held to 64 MiB; the reference's 1000 x 100 round
            trips hold a few KiB (tests/test_reference_defaults.py), and W1-W4 stay far
            below it by construction (one bulk stream of at most 512 KiB, small messages).
        max_frame_size: largest DATA payload this side sends. 64 KiB: one frame per typical
            64 KiB write; 16 KiB, 64 KiB and 256 KiB measured the same within noise, and a
            frame is the unit in which streams interleave, so smaller is fairer. Set it to
            128 (``REFERENCE_MAX_FRAME_SIZE``) to talk to an unconfigured reference peer
            (:meth:`for_reference` does).
        max_recv_frame_size: largest DATA payload accepted; a larger one is a protocol error
            that closes the session. Payloads are streamed, so this does not bound memory.
        max_streams: most concurrent streams the peer may open on this session (over it:
            RST REFUSED), and most concurrent streams this side opens (``open_stream`` waits).
        accept_backlog: streams opened by the peer and not yet accepted by the application
            (over it: RST REFUSED). Unused when a per-stream handler is installed.
        write_buffer_high: transport write buffer high-water mark: above it ``drain()``
            waits until the transport has written enough (asyncio ``pause_writing``).
        keepalive_interval: seconds of outbound silence after which a keepalive (session
            WINDOW UPDATE with value 0) is sent; ``None`` disables keepalives.
        idle_timeout: seconds without any inbound byte after which the session is closed as
            dead; ``None`` disables it. Use with ``keepalive_interval`` on both sides.
        linger_timeout: seconds a gracefully closed stream waits for the peer to finish its
            direction before the stream is ended with RST NO_ERROR.
        close_timeout: seconds :meth:`Session.aclose` lets open streams finish before FIN.
        send_resets: False never sends RST where mio has a choice (a reference peer hangs on
            any RST for a stream it knows): a failed or cancelled handler ends its stream
            with a half-close instead of RST, and a lingering stream is forgotten silently
            (later DATA for it is dropped unanswered). RSTs the protocol requires (a flow-
            control violation, an OPEN over a limit, ``Stream.reset()`` called by the
            application, a stream shed for memory) are still sent.
    """

    initial_window: int = 256 * 1024
    max_window: int = 512 * 1024
    max_open_window: int = MAX_VALUE
    max_session_memory: int = 64 * 1024 * 1024
    max_frame_size: int = 64 * 1024
    max_recv_frame_size: int = MAX_VALUE
    max_streams: int = 4096
    accept_backlog: int = 1024
    write_buffer_high: int = 1024 * 1024
    keepalive_interval: float | None = None
    idle_timeout: float | None = None
    linger_timeout: float = 30.0
    close_timeout: float = 10.0
    send_resets: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.initial_window <= MAX_VALUE:
            raise ValueError(f"initial_window must be in 1..{MAX_VALUE} (it travels in OPEN)")
        if not self.initial_window <= self.max_window <= MAX_WINDOW:
            raise ValueError(f"max_window must be in initial_window..{MAX_WINDOW}")
        if not 1 <= self.max_open_window <= MAX_VALUE:
            raise ValueError(f"max_open_window must be in 1..{MAX_VALUE} (OPEN carries 24 bits)")
        if self.max_session_memory < 1:
            raise ValueError("max_session_memory must be positive")
        for name in ("max_frame_size", "max_recv_frame_size"):
            if not 1 <= getattr(self, name) <= MAX_VALUE:
                raise ValueError(f"{name} must be in 1..{MAX_VALUE}")
        for name in ("max_streams", "accept_backlog", "write_buffer_high"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        for name in ("keepalive_interval", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")
        for name in ("linger_timeout", "close_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @classmethod
    def for_reference(cls, **changes: object) -> Config:
        """The settings an unconfigured reference (Go) peer needs, plus ``changes``.

        DATA payloads of at most 128 bytes (its read-buffer limit answers a larger frame
        with RST), no RST where mio has a choice (``send_resets=False``: it hangs on any
        RST for a stream it knows), and ``initial_window`` 0xFFFFFF, its own default.
        See docs/PROTOCOL.md ("Talking to the reference") for what stays unsafe.
        """
        settings: dict[str, object] = {
            "max_frame_size": REFERENCE_MAX_FRAME_SIZE,
            "initial_window": MAX_VALUE,
            "max_window": MAX_VALUE,
            "send_resets": False,
        }
        settings.update(changes)
        return cls(**settings)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Config:
        """Return a copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
