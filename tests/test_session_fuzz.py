"""Session-level fuzzing over real TCP: a raw peer sends random well-formed and malformed frames.

Each run is one connection to a ``mio.serve`` echo server. A seeded generator makes a
sequence of frames (opens, data, window updates, resets, keepalives, reserved bits set,
data for unknown streams, windows that are too small, ...) and, in some runs, one fatal frame
(bad flags, a frame on the wrong id, an oversized DATA header, or a FIN). The bytes go out in
random chunks. The outcome is always one of two:

* no fatal frame: the session keeps serving: a fresh control stream echoes, no FIN is sent;
* a fatal frame: the session ends (FIN PROTOCOL_ERROR for a malformed frame, nothing for the
  peer's own FIN), closes the connection, and says why in ``close_error``.

Never a hang (every wait has a timeout), no task left behind, and mio's memory does not grow
across runs (tracemalloc, mio's own allocations).
"""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc

import pytest
from _rawpeer import (
    DATA,
    DATA_HFR,
    FIN,
    OPEN,
    RST,
    SWND,
    WND,
    RawPeer,
    h,
    mio_server,
    raw_peer,
    settle_tasks,
)

import mio

SIDS = [1, 3, 5, 7, 9, 2, 4, 999]
CONTROL = 100_001
MAX_RECV = 4096


def random_frames(rng: random.Random, count: int, fatal: bool) -> tuple[bytes, str | None]:
    """``count`` random frames; with ``fatal``, one fatal frame somewhere. Returns the
    bytes and the kind of fatal frame ("malformed", "fin" or None)."""
    frames: list[bytes] = []
    fatal_at = rng.randrange(count) if fatal else -1
    kind_of_fatal = None
    for i in range(count):
        if i == fatal_at:
            kind_of_fatal, frame = fatal_frame(rng)
            frames.append(frame)
            continue
        sid = rng.choice(SIDS)
        op = rng.choices(["open", "data", "wnd", "rst", "swnd"], weights=[3, 8, 2, 1, 1])[0]
        if op == "open":
            frame = h(sid, rng.choice([0, 1, 100, 4096, 1 << 16, 0xFFFFFF]), OPEN)
        elif op == "data":
            payload = rng.randbytes(rng.choice([0, 1, 2, 50, 300, 1500]))
            flags = DATA_HFR if rng.random() < 0.1 else DATA
            frame = h(sid, len(payload), flags) + payload
        elif op == "wnd":
            frame = h(sid, rng.choice([0, 1, 1000, 0xFFFFFF]), WND)
        elif op == "rst":
            frame = h(sid, rng.randrange(9), RST)
        else:
            frame = h(0, rng.choice([0, 1, 0xFFFFFF]), SWND)
        if rng.random() < 0.2:  # reserved bits: must be ignored
            reserved = rng.choice([0x20, 0xE0])
            frame = bytes([frame[0] | 0x80]) + frame[1:7] + bytes([frame[7] | reserved]) + frame[8:]
        frames.append(frame)
    return b"".join(frames), kind_of_fatal


def fatal_frame(rng: random.Random) -> tuple[str, bytes]:
    choice = rng.randrange(6)
    if choice == 0:
        return "malformed", h(1, 0, rng.choice([0x00, 0x03, 0x05, 0x0D, 0x1F]))
    if choice == 1:
        return "malformed", h(0, 5, rng.choice([OPEN, WND, RST]))
    if choice == 2:
        return "malformed", h(0, 1, DATA) + b"x"
    if choice == 3:
        return "malformed", h(rng.choice([1, 7, 0x7FFFFFFF]), 0, rng.choice([FIN, SWND]))
    if choice == 4:
        return "malformed", h(1, MAX_RECV + 1, DATA)
    return "fin", h(0, rng.randrange(8), FIN)


async def one_run(server: mio.Server, sessions: asyncio.Queue[mio.Session], seed: int) -> str:
    rng = random.Random(seed)
    fatal = rng.random() < 0.3
    stream, fatal_kind = random_frames(rng, rng.randrange(20, 150), fatal)
    async with raw_peer(server.port) as peer:
        try:
            pos = 0
            while pos < len(stream):
                step = rng.choice([1, 7, 8, 100, 1000, len(stream)])
                peer.send(stream[pos : pos + step])
                pos += step
                if rng.random() < 0.3:
                    await peer.flush()
                    await asyncio.sleep(0)
            await peer.flush()
        except ConnectionError:
            # mio may close the connection while the bytes after a fatal frame still go out.
            assert fatal_kind is not None
        session = await asyncio.wait_for(sessions.get(), 10)
        if fatal_kind is None:
            control = b"control %d" % seed
            await peer.echo(CONTROL, control)
            assert not peer.of_kind(FIN)
            assert not session.is_closed
            outcome = "alive"
        else:
            outcome = await fatal_outcome(peer, session, fatal_kind)
    # The session ends once the peer has gone.
    await asyncio.wait_for(session.wait_closed(), 10)
    return outcome


async def fatal_outcome(peer: RawPeer, session: mio.Session, fatal_kind: str) -> str:
    await peer.wait_eof()
    peer.writer.write_eof()  # mio half-closed after its FIN and waits for ours
    await asyncio.wait_for(session.wait_closed(), 10)
    assert isinstance(session.close_error, mio.SessionClosedError)
    if fatal_kind == "malformed":
        assert peer.of_kind(FIN) == [(FIN, 0, mio.ErrorCode.PROTOCOL_ERROR)]
        assert peer.frames[-1][0] == FIN
        assert "protocol error" in str(session.close_error)
    else:
        assert not peer.of_kind(FIN)
        assert "peer closed the session" in str(session.close_error)
    return "closed"


def mio_memory() -> int:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/mio/*")])
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.mark.timeout(120)
async def test_random_frame_sequences_over_tcp() -> None:
    baseline = set(asyncio.all_tasks())
    sessions: asyncio.Queue[mio.Session] = asyncio.Queue()

    async def collect(session: mio.Session) -> None:
        sessions.put_nowait(session)

    config = mio.Config(max_recv_frame_size=MAX_RECV, linger_timeout=1.0)
    outcomes: dict[str, int] = {"alive": 0, "closed": 0}
    async with mio_server(config=config, session_handler=collect) as server:
        warmup = 10
        tracemalloc.start()
        try:
            for seed in range(60):
                if seed == warmup:
                    await settle_tasks(baseline)  # the last run's handlers have finished
                    gc.collect()
                    before = mio_memory()
                outcomes[await one_run(server, sessions, seed)] += 1
            await settle_tasks(baseline)
            gc.collect()
            growth = mio_memory() - before
        finally:
            tracemalloc.stop()
        assert not server.sessions
    assert outcomes["alive"] >= 20
    assert outcomes["closed"] >= 5
    # Measured 3-4 KiB (both codecs): a leak of 300 bytes per session would show.
    assert growth < 16 * 1024, f"mio kept {growth} bytes across 50 sessions"
    await settle_tasks(baseline)
