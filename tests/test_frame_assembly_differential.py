"""Differential test of payload assembly: the compiled decoder and its pure-Python twin,
fed the same frames cut at the same places, with the same ``payload_buffer`` /
``payload_filled`` calls (valid and invalid) in between, agree on every callback, every
error (type, message, offset), and ``offset``, ``frames``, ``in_frame``, ``assembling``
after every call."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from conftest import Impl

DATA, DATA_HFR, WND, OPEN, FIN = 0x01, 0x11, 0x09, 0x0C, 0x02


def _header(sid: int, value: int, flags: int) -> bytes:
    return sid.to_bytes(4, "big") + value.to_bytes(3, "big") + bytes([flags])


def _stream(rng: random.Random) -> bytes:
    out = []
    for _ in range(rng.randrange(1, 12)):
        kind = rng.choice(["data"] * 8 + ["hfr"] * 3 + ["wnd", "open", "bad", "big"])
        sid = rng.choice([1, 2, 3])
        if kind in ("data", "hfr"):
            n = rng.choice([0, 1, 2, 7, 8, 9, 63, 64, 65, 200, 1000])
            flags = DATA if kind == "data" else DATA_HFR
            out.append(_header(sid, n, flags) + bytes(rng.randrange(256) for _ in range(n)))
        elif kind == "wnd":
            out.append(_header(sid, rng.randrange(1 << 24), WND))
        elif kind == "open":
            out.append(_header(sid, 1000, OPEN))
        elif kind == "big":  # over max_frame_size (2000)
            out.append(_header(sid, 3000, DATA) + bytes(50))
        else:  # FIN on a stream: a frame error
            out.append(_header(sid, 0, FIN))
    return b"".join(out)


class _Run:
    def __init__(self, impl: Impl, assemble_max: int) -> None:
        self.trace: list[Any] = []
        self.dec = impl.frame.FrameDecoder(
            lambda sid, data, end: self.trace.append(("data", sid, bytes(data), end)),
            lambda kind, sid, value: self.trace.append(("frame", kind, sid, value)),
            2000,
            assemble_max,
        )

    def call(self, name: str, *args: Any) -> Any:
        try:
            result = getattr(self.dec, name)(*args)
        except Exception as exc:  # compared between the twins
            self.trace.append(("raise", type(exc).__name__, str(exc), getattr(exc, "offset", None)))
            result = None
        d = self.dec
        self.trace.append(("state", d.offset, d.frames, d.in_frame, d.assembling))
        return result


def _run(impl: Impl, seed: int) -> list[Any]:
    rng = random.Random(seed)
    run = _Run(impl, rng.choice([0, 8, 64, 1000, 2000]))
    data = _stream(rng)
    pos = 0
    while pos < len(data):
        if rng.random() < 0.5:
            buf = run.call("payload_buffer")
            if buf is not None:
                run.trace.append(("buffer", len(buf), buf.readonly))
                choice = rng.random()
                if choice < 0.7:  # a transport read of part of what is left
                    n = min(len(buf), rng.randrange(0, 80), len(data) - pos)
                    buf[:n] = data[pos : pos + n]
                    pos += n
                    run.call("payload_filled", n)
                elif choice < 0.85:  # an invalid report
                    run.call("payload_filled", rng.choice([-1, len(buf) + 1]))
                del buf
                continue
            run.call("payload_filled", 0)  # no payload being assembled: an error
        n = rng.randrange(1, 400)
        run.call("feed", data[pos : pos + n])
        pos += n
    run.call("payload_buffer")
    return run.trace


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_assembly_differential(both_impls: list[Impl], seed: int) -> None:
    traces = [_run(impl, seed) for impl in both_impls]
    for impl, trace in zip(both_impls[1:], traces[1:], strict=True):
        assert trace == traces[0], f"{impl.name} differs from {both_impls[0].name}"


def test_payload_filled_out_of_range_is_a_value_error(impl: Impl) -> None:
    """Both twins: a count no payload buffer can hold is a ValueError, however large
    (the compiled one raised OverflowError past the C range)."""
    run = _Run(impl, 100)
    run.call("feed", _header(1, 100, DATA) + bytes(50))
    assert run.dec.assembling == 100
    for bad in (51, -1, 2**70, -(2**70)):
        with pytest.raises(ValueError, match=rf"payload_filled\({bad}\) without"):
            run.dec.payload_filled(bad)
    with pytest.raises(TypeError):
        run.dec.payload_filled(1.0)
    buf = run.dec.payload_buffer()
    buf[:] = b"y" * 50
    del buf
    run.dec.payload_filled(50)
    assert run.trace[-1] == ("data", 1, bytes(50) + b"y" * 50, False)
