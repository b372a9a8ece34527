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
import importlib.util
import itertools
import pathlib
import random
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mio

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


@FAST
@given(stream=st.binary(max_size=120), cut=st.integers(0, 120))
def test_session_differential_random_bytes(both_impls: list[Impl], stream: bytes, cut: int) -> None:
    _assert_same(both_impls, [stream[:cut], stream[cut:]], 64)


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


def test_random_soup(both_impls: list[Impl]) -> None:
    # Longer random streams than hypothesis makes: both sessions still agree.
    rng = random.Random(99)
    for _ in range(20):
        stream = rng.randbytes(rng.randrange(500))
        _assert_same(both_impls, [stream], 64)
