"""Differential fuzz target of the MIO frame decoder (atheris / libFuzzer).

Every input is fed to the compiled decoder (``mio._frame``) and to its pure-Python twin
(``mio._frame_py``). Both must report exactly the same events (with the decoder's offset and
``in_frame`` state at each callback), the same error (type, message, offset, flags, stream
id), the same state after every feed, and keep raising that error once broken. The only
exception allowed out of ``feed`` is :class:`mio.FrameError`; anything else (a crash, a
``SystemError`` from the C code, a mismatch ``AssertionError``) is a finding.

Further invariants: the frames decoded before an error (or before the end of the input),
re-encoded with the codec's own encoders, give back the input bytes with the reserved bits
(bit 31 of the stream id, flags 0xE0) cleared; an error points at a complete header whose
flags and stream id are the ones reported.

Input layout (so that the fuzzer controls everything)::

    byte 0: max_frame_size: bit 7 set -> 0xFFFFFF, else (byte & 0x7F) + 1 (1..128)
    byte 1: chunking: low 7 bits = chunk size (0 = the whole stream in one feed);
            bit 7 = feed bytearray/memoryview chunks instead of bytes (the buffer path)
    rest  : the inbound byte stream

Usage::

    pip install atheris                       # binary wheels for CPython 3.8-3.11 on Linux
    # fuzz for 10 minutes at low priority; new inputs go to the first corpus directory
    mkdir -p /tmp/mio-corpus
    nice -n 19 python fuzz/fuzz_decoder.py /tmp/mio-corpus fuzz/corpus \\
        -max_total_time=600 -print_final_stats=1
    python fuzz/fuzz_decoder.py -runs=0 fuzz/corpus      # replay the seed corpus only
    python fuzz/fuzz_decoder.py crash-<sha1>             # reproduce a finding
    python fuzz/fuzz_decoder.py --make-corpus            # rewrite fuzz/corpus/ seeds

Coverage feedback comes from the instrumented pure-Python twin (which mirrors the compiled
decoder branch for branch) and this harness; the compiled module runs uninstrumented unless
it was built with clang and ``-fsanitize=fuzzer-no-link``. Without atheris, the same
:func:`check` is driven by hypothesis in ``tests/test_fuzz.py``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import mio
from mio import _frame as c_frame
from mio.wire import HEADER_SIZE, MAX_STREAM_ID, MAX_VALUE

# The twin is imported in main() under atheris instrumentation when fuzzing.
py_frame: Any = None

_DATA_KINDS = (0x01, 0x11)
CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def parse_input(data: bytes) -> tuple[int, int, bool, bytes]:
    """Split a fuzz input into (max_frame_size, chunk size, buffer path, stream)."""
    b0 = data[0] if len(data) > 0 else 0x80
    b1 = data[1] if len(data) > 1 else 0
    mfs = MAX_VALUE if b0 & 0x80 else (b0 & 0x7F) + 1
    return mfs, b1 & 0x7F, bool(b1 & 0x80), bytes(data[2:])


def chunks_of(stream: bytes, size: int, buffers: bool) -> list[Any]:
    if size == 0:
        pieces = [stream]
    else:
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)] or [b""]
    if buffers:
        # Alternate the two non-bytes kinds the session may hand over.
        return [
            bytearray(p) if i % 2 else memoryview(bytearray(b"\xaa" + p))[1:]
            for i, p in enumerate(pieces)
        ]
    return pieces


def run(frame: Any, chunks: list[Any], mfs: int) -> tuple[Any, ...]:
    """Feed ``chunks`` to one implementation; return everything observable."""
    events: list[tuple[Any, ...]] = []
    dec = frame.FrameDecoder(
        lambda sid, payload, end: events.append(
            ("data", sid, bytes(payload), end, dec.offset, dec.in_frame)
        ),
        lambda kind, sid, value: events.append(("frame", kind, sid, value, dec.offset, dec.frames)),
        mfs,
    )
    assert dec.max_frame_size == mfs
    error: Any = None
    exc_obj: mio.FrameError | None = None
    states = []
    for chunk in chunks:
        try:
            dec.feed(chunk)
        except mio.FrameError as exc:  # anything else escapes: a finding
            exc_obj = exc
            error = (type(exc), str(exc), exc.offset, exc.flags, exc.stream_id, exc.error_code)
            break
        states.append((dec.offset, dec.in_frame, dec.frames))
    after = None
    if exc_obj is not None:
        try:
            dec.feed(b"\x00\x00\x00\x01\x00\x00\x00\x01")
        except mio.FrameError as exc:
            after = (type(exc), str(exc), exc is exc_obj)
    return events, error, states, after, dec.offset, dec.in_frame


def reencode(frame: Any, events: list[tuple[Any, ...]]) -> tuple[bytes, int]:
    """Re-encode the complete frames of ``events``; return (bytes, input bytes covered)."""
    out = bytearray()
    pieces: list[bytes] = []
    covered = 0
    for ev in events:
        if ev[0] == "data":
            _, sid, payload, end, _offset, in_frame = ev
            pieces.append(payload)
            if in_frame:
                continue  # more of this frame's payload follows
            body = b"".join(pieces)
            pieces = []
            out += frame.pack_header(sid, len(body), 0x11 if end else 0x01)
            out += body
        else:
            _, kind, sid, value, _offset, _frames = ev
            frame.append_frame(out, sid, value, kind)
        covered = len(out)
    return bytes(out), covered


def normalise(stream: bytes) -> bytes:
    """``stream`` with the reserved bits of every header cleared (walks the frames)."""
    out = bytearray(stream)
    pos = 0
    while pos + HEADER_SIZE <= len(out):
        out[pos] &= 0x7F
        out[pos + 7] &= 0x1F
        kind = out[pos + 7]
        size = int.from_bytes(out[pos + 4 : pos + 7], "big") if kind in _DATA_KINDS else 0
        pos += HEADER_SIZE + size
    return bytes(out)


def check(data: bytes) -> None:
    """The fuzz target body: raise on any difference or broken invariant."""
    mfs, size, buffers, stream = parse_input(data)
    chunks = chunks_of(stream, size, buffers)
    result_c = run(c_frame, chunks, mfs)
    result_py = run(_twin(), chunks_of(stream, size, buffers), mfs)
    if result_c != result_py:
        raise AssertionError(f"compiled and pure decoders differ:\n{result_c!r}\n{result_py!r}")
    events, error, _states, after, offset, in_frame = result_c
    assert offset <= len(stream)
    if error is None:
        if not in_frame:
            assert offset == len(stream)
    else:
        _, message, err_offset, flags, sid, code = error
        assert after is not None, "a broken decoder must keep raising"
        assert after[:2] == error[:2], "error not sticky"
        assert after[2], "not the same error object"
        assert code == 7, "FrameError must carry PROTOCOL_ERROR"
        assert err_offset == offset
        assert err_offset + HEADER_SIZE <= len(stream)
        head = stream[err_offset : err_offset + HEADER_SIZE]
        assert head[7] == flags
        assert int.from_bytes(head[:4], "big") & MAX_STREAM_ID == sid
        assert f"offset {err_offset}" in message
    encoded, covered = reencode(c_frame, events)
    assert encoded == normalise(stream[:covered]), "decode/encode round trip differs"


def _twin() -> Any:
    global py_frame
    if py_frame is None:
        from mio import _frame_py

        py_frame = _frame_py
    return py_frame


def TestOneInput(data: bytes) -> None:
    check(data)


# --------------------------------------------------------------------------------------------
# Seed corpus: one small file per frame kind, split frames, bad flags.


def _h(sid: int, value: int, flags: int) -> bytes:
    return sid.to_bytes(4, "big") + value.to_bytes(3, "big") + bytes([flags])


def seeds() -> dict[str, bytes]:
    """Name -> fuzz input (two control bytes, then the stream)."""
    whole = b"\x80\x00"  # max frame size 0xFFFFFF, one feed
    return {
        "open": whole + _h(1, 0x40000, 0x0C),
        "data": whole + _h(1, 5, 0x01) + b"hello",
        "data_hfr": whole + _h(3, 3, 0x11) + b"bye",
        "data_empty_hfr": whole + _h(5, 0, 0x11),
        "window_update": whole + _h(1, 65536, 0x09),
        "rst": whole + _h(7, 3, 0x04),
        "session_window_update": whole + _h(0, 0, 0x08),
        "fin": whole + _h(0, 7, 0x02),
        "split_one_byte": b"\x80\x01"
        + _h(2, 0xFFFFFF, 0x0C)
        + _h(2, 10, 0x01)
        + bytes(range(10))
        + _h(2, 0, 0x11),
        "split_buffers": b"\x80\x83" + _h(1, 4, 0x01) + b"abcd" + _h(1, 4, 0x09),
        "bad_flags": whole + _h(1, 0, 0x03),
        "reserved_bits": whole + _h(0x80000001, 2, 0xE1) + b"ok" + _h(0x80000000, 0, 0xE8),
        "stream_frame_on_0": whole + _h(0, 1, 0x04),
        "session_frame_on_1": whole + _h(1, 0, 0x02),
        "data_on_0": whole + _h(0, 1, 0x01) + b"x",
        "oversized_data": b"\x07\x00" + _h(1, 9, 0x01) + bytes(9),
        "truncated": whole + _h(1, 100, 0x01) + b"only-some" + _h(1, 0, 0x0C)[:5],
    }


def make_corpus(directory: str = CORPUS_DIR) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds().items():
        check(data)
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def main() -> None:
    if "--make-corpus" in sys.argv:
        make_corpus()
        return
    import atheris

    global py_frame
    with atheris.instrument_imports(include=["mio._frame_py"]):
        from mio import _frame_py
    py_frame = _frame_py
    atheris.instrument_func(check)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
