"""Fuzzing in the default suite: the atheris target's checks, and a session-level differential.

``tests/test_frame_properties.py`` already fuzzes the bare decoder differentially (random
bytes, mutated streams, random headers). This module adds what it does not cover:

* the atheris target ``fuzz/fuzz_decoder.py`` stays runnable without atheris: its seed corpus
  and hypothesis-made inputs go through the same ``check`` (differential, plus the decode →
  re-encode round trip, the buffer-protocol feed path and the error position invariants);
* a whole :class:`mio.Session` on the compiled codec and one on the pure codec receive the
  same random (well-formed and malformed) byte stream, in the same chunks, while a
  deterministic application echoes every stream: both must write exactly the same bytes and
  end in the same state. This covers the session's dispatch and the window modules too.

A long run of the same checks is marked ``slow`` (``pytest -m slow tests/test_fuzz.py``).
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import itertools
import pathlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mio
from mio.wire import ErrorCode

if TYPE_CHECKING:
    from conftest import Impl

pytest.importorskip("mio._frame", reason="differential fuzzing needs the compiled codec")

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mio_fuzz_decoder", ROOT / "fuzz/fuzz_decoder.py")
assert _spec is not None
assert _spec.loader is not None
fuzz_decoder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_decoder)

pytestmark = pytest.mark.c_extension  # differential: needs the compiled modules

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck))

OPEN, DATA, DATA_HFR, WND, RST, SWND, FIN = 0x0C, 0x01, 0x11, 0x09, 0x04, 0x08, 0x02


def h(sid: int, value: int, flags: int) -> bytes:
    return sid.to_bytes(4, "big") + value.to_bytes(3, "big") + bytes([flags])


# --------------------------------------------------------------------------------------------
# The atheris target, driven without atheris.


def test_seed_corpus_is_complete_and_passes() -> None:
    corpus = ROOT / "fuzz" / "corpus"
    files = sorted(corpus.iterdir())
    assert len(files) >= 12
    for path in files:
        fuzz_decoder.check(path.read_bytes())
    assert {p.name for p in files} >= set(fuzz_decoder.seeds())


@st.composite
def target_inputs(draw: st.DrawFn) -> bytes:
    """Inputs for the atheris target: two control bytes, then mostly frame-shaped bytes."""
    control = draw(st.binary(min_size=2, max_size=2))
    seeds = list(fuzz_decoder.seeds().values())
    base = bytearray(draw(st.sampled_from(seeds))[2:] * draw(st.integers(1, 3)))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(base)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "header"]))
        if op == "flip" and pos < len(base):
            base[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            base[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif op == "delete":
            del base[pos : pos + draw(st.integers(1, 9))]
        else:
            base[pos:pos] = h(
                draw(st.sampled_from([0, 1, 2, 0x80000001, 0x7FFFFFFF])),
                draw(st.sampled_from([0, 1, 3, 200, 0xFFFFFF])),
                draw(st.integers(0, 255)),
            ) + bytes(draw(st.integers(0, 4)))
    return control + bytes(base)


@FAST
@given(data=st.one_of(target_inputs(), st.binary(max_size=200)))
def test_fuzz_target_check(data: bytes) -> None:
    fuzz_decoder.check(data)


@pytest.mark.slow
@LONG
@given(data=st.one_of(target_inputs(), st.binary(max_size=400)))
def test_fuzz_target_check_long(data: bytes) -> None:
    fuzz_decoder.check(data)


# --------------------------------------------------------------------------------------------
# Session-level differential: compiled codec vs pure codec, whole sessions.


class CaptureTransport(asyncio.Transport):
    """Records what the session writes."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closing = False
        self.aborted = False

    def write(self, data: Any) -> None:
        if not self.closing:
            self.out += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


SIDS = [1, 2, 3, 5, 0x80000001]  # a small pool so that frames meet the same streams

good_frames = st.one_of(
    st.builds(
        lambda s, w: h(s, w, OPEN), st.sampled_from(SIDS), st.sampled_from([0, 1, 16, 64, 0xFFFFFF])
    ),
    st.builds(
        lambda s, p, end: h(s, len(p), DATA_HFR if end else DATA) + p,
        st.sampled_from(SIDS),
        st.binary(max_size=40),
        st.booleans(),
    ),
    st.builds(
        lambda s, v: h(s, v, WND), st.sampled_from(SIDS), st.sampled_from([0, 1, 10, 0xFFFFFF])
    ),
    st.builds(lambda s, c: h(s, c, RST), st.sampled_from(SIDS), st.integers(0, 8)),
    st.builds(lambda v: h(0, v, SWND), st.sampled_from([0, 5])),
)
bad_frames = st.one_of(
    st.builds(lambda c: h(0, c, FIN), st.integers(0, 7)),
    st.builds(lambda f: h(1, 0, f), st.sampled_from([0x00, 0x03, 0x0D, 0x1F])),
    st.binary(min_size=1, max_size=9),
)
# About one frame in twenty ends the session (FIN, bad flags) or is noise.
frame_bytes = st.integers(0, 19).flatmap(lambda i: bad_frames if i == 0 else good_frames)


@st.composite
def session_inputs(draw: st.DrawFn) -> tuple[list[bytes], int]:
    frames = draw(st.lists(frame_bytes, max_size=25))
    if draw(st.booleans()):  # often start with open streams, so that data meets them
        frames[:0] = [h(1, 64, OPEN), h(3, 4096, OPEN)]
    stream = b"".join(frames)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    return chunks, draw(st.sampled_from([16, 64, 4096]))


def run_session(impl: Impl, chunks: list[bytes], window: int) -> list[Any]:
    """Feed ``chunks`` to a server session on ``impl``; echo every stream; return a trace."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_drive(impl, chunks, window))
    finally:
        loop.close()


async def _drive(impl: Impl, chunks: list[bytes], window: int) -> list[Any]:
    config = mio.Config(initial_window=window, max_window=max(window, 64), max_frame_size=16)
    session = mio.Session(client=False, config=config, _codec=impl)
    transport = CaptureTransport()
    session.connection_made(transport)
    streams: dict[int, mio.Stream] = {}
    trace: list[Any] = []
    for i, chunk in enumerate(chunks):
        session.data_received(chunk)
        while session._accept_queue:
            stream = await session.accept_stream()
            streams[stream.id] = stream
        if i % 3 == 2 and not session.is_closed:
            own = await session.open_stream()  # the application opens streams too
            streams[own.id] = own
            own.write(b"hi %d" % own.id)
        for sid, stream in sorted(streams.items()):
            try:
                if stream.buffered:
                    stream.write(await stream.read(stream.buffered))
                if stream.at_eof() and not stream.is_closing():
                    stream.close()
            except mio.MioError as exc:
                trace.append(("error", sid, type(exc).__name__, str(exc)))
        for _ in range(3):
            await asyncio.sleep(0)
        trace.append(
            (
                bytes(transport.out),
                session.is_closed,
                str(session.close_error),
                session.stream_count,
                [
                    (s.id, s.buffered, s.write_pending, s.send_window, s.recv_window, s.is_closed)
                    for _, s in sorted(streams.items())
                ],
            )
        )
        transport.out.clear()
    if not session.is_closed:
        session.close()
    session.connection_lost(None)
    trace.append((bytes(transport.out), transport.closing, transport.aborted))
    return trace


def _assert_same(both_impls: list[Impl], chunks: list[bytes], window: int) -> None:
    traces = [run_session(impl, chunks, window) for impl in both_impls]
    for impl, trace in zip(both_impls[1:], traces[1:], strict=True):
        assert trace == traces[0], f"{impl.name} session differs from {both_impls[0].name}"


@FAST
@given(inputs=session_inputs())
def test_session_differential(both_impls: list[Impl], inputs: tuple[list[bytes], int]) -> None:
    _assert_same(both_impls, *inputs)


# Structured frame sequences: every header valid, kinds and ids mixed, values at the
# limits, so that what a sequence exercises is the session's and the windows' logic, not
# the decoder's first check (random bytes almost always die at the first header).
STRUCT_SIDS = [1, 2, 3, 4, 0x7FFFFFFF]
WINDOWS = [16, 64, 4096]


def structured_frames(pick: Callable[[Sequence[Any]], Any], count: int, window: int) -> list[bytes]:
    """``count`` frames chosen with ``pick`` (``random.choice`` or a hypothesis draw)."""
    near = [0, 1, window - 1, window, window + 1]  # DATA sizes around the receive window
    out = []
    for _ in range(count):
        sid = pick(STRUCT_SIDS)
        kind = pick(["open", "open", "data", "data", "data", "hfr", "wnd", "wnd", "rst", "swnd"])
        if kind == "open":
            out.append(h(sid, pick([0, 1, window, 0xFFFFFF]), OPEN))
        elif kind in ("data", "hfr"):
            n = pick([*near, 3, 7])
            out.append(h(sid, n, DATA_HFR if kind == "hfr" else DATA) + bytes([sid & 0xFF]) * n)
        elif kind == "wnd":
            # 127 increments of 0xFFFFFF after an OPEN of 0xFFFFFF stay at 2^31 - 1 - 127;
            # 128 overflow the send window (a flow-control error).
            repeat = pick([1, 1, 127, 128])
            out.append(h(sid, pick([0, 1, window, 0xFFFFFF]), WND) * repeat)
        elif kind == "rst":
            out.append(h(sid, pick([0, 1, 4, 7, 9, 0xFFFFFF]), RST))
        else:
            out.append(h(0, pick([0, 0xFFFFFF]), SWND))
    if pick([False] * 9 + [True]):  # sometimes the peer ends the session
        out.append(h(0, pick([0, 7]), FIN))
    return out


@st.composite
def structured_inputs(draw: st.DrawFn) -> tuple[list[bytes], int]:
    window = draw(st.sampled_from(WINDOWS))

    def pick(options: Sequence[Any]) -> Any:
        return draw(st.sampled_from(options))

    stream = b"".join(structured_frames(pick, draw(st.integers(1, 30)), window))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    return [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])], window


@FAST
@given(inputs=structured_inputs())
def test_session_differential_structured(
    both_impls: list[Impl], inputs: tuple[list[bytes], int]
) -> None:
    _assert_same(both_impls, *inputs)


@pytest.mark.slow
@LONG
@given(inputs=session_inputs())
def test_session_differential_long(both_impls: list[Impl], inputs: tuple[list[bytes], int]) -> None:
    _assert_same(both_impls, *inputs)


def test_session_differential_replays_fuzz_corpus(both_impls: list[Impl]) -> None:
    for path in sorted((ROOT / "fuzz" / "corpus").iterdir()):
        stream = path.read_bytes()[2:]
        _assert_same(both_impls, [stream], 4096)
        _assert_same(both_impls, [stream[i : i + 1] for i in range(len(stream))], 4096)


def test_structured_soup(both_impls: list[Impl]) -> None:
    # Longer structured streams than hypothesis makes, cut at random: both sessions agree.
    rng = random.Random(99)
    for _ in range(20):
        window = rng.choice(WINDOWS)
        stream = b"".join(structured_frames(rng.choice, rng.randrange(20, 120), window))
        cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randrange(6)))
        chunks = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
        _assert_same(both_impls, chunks, window)


def _sent_frames(out: bytes) -> Iterator[tuple[int, int, int]]:
    """(flags, stream id, value) of each frame mio wrote."""
    i = 0
    while i + 8 <= len(out):
        sid, value, flags = int.from_bytes(out[i : i + 4], "big"), 0, out[i + 7]
        value = int.from_bytes(out[i + 4 : i + 7], "big")
        i += 8 + (value if flags in (DATA, DATA_HFR) else 0)
        yield flags, sid, value


def test_structured_inputs_reach_the_session_logic(
    both_impls: list[Impl], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coverage signal of the structured fuzzing: what the frames reach and what mio
    answers, counted over the soup's 20 sequences."""
    reached: collections.Counter[str] = collections.Counter()
    on_frame, on_data = mio.Session._on_frame, mio.Session._on_data
    names = {OPEN: "open", WND: "wnd", RST: "rst", FIN: "fin", SWND: "swnd"}

    def count_frame(self: mio.Session, kind: int, sid: int, value: int) -> None:
        reached[names.get(kind, "?")] += 1
        on_frame(self, kind, sid, value)

    def count_data(self: mio.Session, sid: int, data: bytes, end: bool) -> None:
        reached["hfr" if end else "data"] += 1
        on_data(self, sid, data, end)

    monkeypatch.setattr(mio.Session, "_on_frame", count_frame)
    monkeypatch.setattr(mio.Session, "_on_data", count_data)
    answers: collections.Counter[tuple[int, int]] = collections.Counter()
    rng = random.Random(99)
    for _ in range(20):
        window = rng.choice(WINDOWS)
        count = rng.randrange(20, 120)
        frames = structured_frames(rng.choice, count, window)
        # A few frames per read, so that the application reads (and echoes) in between.
        chunks = [b"".join(frames[i : i + 3]) for i in range(0, len(frames), 3)]
        trace = run_session(both_impls[0], chunks, window)
        for entry in trace:
            for flags, _sid, value in _sent_frames(entry[0]):
                answers[(flags, value if flags in (RST, FIN) else -1)] += 1
    # Every kind reached the session's dispatch, many times (about 16,000 window updates,
    # 450 DATA, 280 OPEN, 140 HFR, 130 RST, 130 session updates at this seed).
    assert all(reached[k] >= 20 for k in ("open", "data", "hfr", "wnd", "rst", "swnd")), reached
    # And the session and window logic answered: echoed data, window updates, refusals of
    # zero-window OPENs, flow-control and protocol violations of a stream.
    # (At this seed: 1270 DATA frames, 17 window updates, RST REFUSED 54, FLOW_CONTROL 43,
    # PROTOCOL_ERROR 75, CLOSED 92; the bounds are about a quarter of that.)
    assert answers[(DATA, -1)] + answers[(DATA_HFR, -1)] >= 300, (answers, reached)
    assert answers[(WND, -1)] >= 5, (answers, reached)
    assert answers[(RST, ErrorCode.REFUSED)] >= 10, answers
    assert answers[(RST, ErrorCode.FLOW_CONTROL_ERROR)] >= 10, answers
    assert answers[(RST, ErrorCode.PROTOCOL_ERROR)] >= 10, answers
    assert answers[(RST, ErrorCode.CLOSED)] >= 10, answers
