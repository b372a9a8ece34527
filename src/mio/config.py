"""Protocol parameters of a session: one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses

from .wire import MAX_VALUE, MAX_WINDOW

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
            (or of a peer's stream whose OPEN window was smaller). 1 MiB: measured on
            loopback, bulk throughput at 1 MiB is within ~10% of 16 MiB, while a 16 MiB
            window lets one bulk stream queue megabytes in the kernel ahead of other
            streams' small messages (W4: p99 latency beside a bulk transfer 25x the idle
            p99 at 16 MiB, 5x at 2 MiB, 2x at 1 MiB).
        max_open_window: largest window accepted in a peer's OPEN (the peer chooses the
            initial window of both directions); above it the stream is refused. The default
            admits the reference implementation's 0xFFFFFF.
        max_session_window: budget for the windows granted to peer-opened streams, summed
            over the open ones: an OPEN that would exceed it is refused (RST REFUSED). With
            ``max_window``, it bounds what a peer can make this side buffer:
            ``max_session_window + max_streams x max_window`` at most, and the auto-tuned
            part only grows while the application keeps reading.
        max_frame_size: largest DATA payload this side sends. 64 KiB: one frame per typical
            64 KiB write; 16 KiB, 64 KiB and 256 KiB measured the same within noise, and a
            frame is the unit in which streams interleave, so smaller is fairer. Set it to
            128 (``REFERENCE_MAX_FRAME_SIZE``) to talk to an unconfigured reference peer.
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
    """

    initial_window: int = 256 * 1024
    max_window: int = 1024 * 1024
    max_open_window: int = MAX_VALUE
    max_session_window: int = 256 * 1024 * 1024
    max_frame_size: int = 64 * 1024
    max_recv_frame_size: int = MAX_VALUE
    max_streams: int = 4096
    accept_backlog: int = 1024
    write_buffer_high: int = 1024 * 1024
    keepalive_interval: float | None = None
    idle_timeout: float | None = None
    linger_timeout: float = 30.0
    close_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.initial_window <= MAX_VALUE:
            raise ValueError(f"initial_window must be in 1..{MAX_VALUE} (it travels in OPEN)")
        if not self.initial_window <= self.max_window <= MAX_WINDOW:
            raise ValueError(f"max_window must be in initial_window..{MAX_WINDOW}")
        if not 1 <= self.max_open_window <= MAX_VALUE:
            raise ValueError(f"max_open_window must be in 1..{MAX_VALUE} (OPEN carries 24 bits)")
        if self.max_session_window < 1:
            raise ValueError("max_session_window must be positive")
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

    def replace(self, **changes: object) -> Config:
        """Return a copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
