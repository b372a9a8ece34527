"""Micro benchmarks of the frame codec and the window accounting, compiled vs pure-Python.

Run with ``pytest benchmarks`` (``--benchmark-disable`` for a quick smoke run). Each benchmark
is parametrized over both implementations and grouped, so the two numbers print side by side;
``extra_info`` records how many frames (or operations) one round handles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Impl

CHUNK = 64 * 1024  # bytes per feed(), like a large transport read
TOTAL = 1 << 20  # bytes of wire data decoded per round


def header(stream_id: int, value: int, flags: int) -> bytes:
    return stream_id.to_bytes(4, "big") + value.to_bytes(3, "big") + bytes([flags])


def chunks_of(stream: bytes) -> list[bytes]:
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


def data_stream(payload_size: int) -> tuple[list[bytes], int]:
    frame = header(1, payload_size, 0x01) + bytes(payload_size)
    count = max(1, TOTAL // len(frame))
    return chunks_of(frame * count), count


def window_update_stream() -> tuple[list[bytes], int]:
    count = TOTAL // 8
    return chunks_of(header(1, 1024, 0x09) * count), count


def decode_all(impl: Impl, chunks: list[bytes]) -> int:
    """Feed every chunk to a fresh decoder whose callbacks just count; return the count."""
    count = 0

    def on_data(stream_id: int, payload: bytes, end: bool) -> None:
        nonlocal count
        count += 1

    def on_frame(kind: int, stream_id: int, value: int) -> None:
        nonlocal count
        count += 1

    feed = impl.frame.FrameDecoder(on_data, on_frame).feed
    for chunk in chunks:
        feed(chunk)
    return count


# --------------------------------------------------------------------------------------------
# Decoding.


@pytest.mark.parametrize("payload_size", [64, 64 * 1024], ids=["64B", "64KiB"])
def test_decode_data(benchmark: Any, impl: Impl, payload_size: int) -> None:
    chunks, frames = data_stream(payload_size)
    benchmark.group = f"decode DATA {payload_size} B, 64 KiB feeds"
    benchmark.extra_info["frames"] = frames
    delivered = benchmark(decode_all, impl, chunks)
    # Frames cut by a chunk boundary arrive in two pieces: one callback per piece.
    assert frames <= delivered <= frames + len(chunks)


def test_decode_window_updates(benchmark: Any, impl: Impl) -> None:
    chunks, frames = window_update_stream()
    benchmark.group = "decode WINDOW UPDATE, 64 KiB feeds"
    benchmark.extra_info["frames"] = frames
    assert benchmark(decode_all, impl, chunks) == frames


# --------------------------------------------------------------------------------------------
# Encoding.

ENCODE_FRAMES = 10_000


def test_append_data_small(benchmark: Any, impl: Impl) -> None:
    payload = bytes(64)
    append_data = impl.frame.append_data

    def run() -> int:
        buf = bytearray()
        for _ in range(ENCODE_FRAMES):
            append_data(buf, 1, payload)
        return len(buf)

    benchmark.group = "encode DATA 64 B: append_data into a bytearray"
    benchmark.extra_info["frames"] = ENCODE_FRAMES
    assert benchmark(run) == ENCODE_FRAMES * 72


def test_encode_data_small(benchmark: Any, impl: Impl) -> None:
    payload = bytes(64)
    encode_data = impl.frame.encode_data

    def run() -> int:
        n = 0
        for _ in range(ENCODE_FRAMES):
            n += len(encode_data(1, payload))
        return n

    benchmark.group = "encode DATA 64 B: encode_data"
    benchmark.extra_info["frames"] = ENCODE_FRAMES
    assert benchmark(run) == 2 * ENCODE_FRAMES


def test_encode_data_large(benchmark: Any, impl: Impl) -> None:
    payload = bytes(1 << 20)
    encode_data = impl.frame.encode_data

    def run() -> int:
        return len(encode_data(1, payload, 64 * 1024, True))

    benchmark.group = "encode 1 MiB as 64 KiB DATA frames: encode_data"
    benchmark.extra_info["frames"] = 16
    assert benchmark(run) == 32


def test_append_data_large(benchmark: Any, impl: Impl) -> None:
    payload = bytes(1 << 20)
    append_data = impl.frame.append_data

    def run() -> int:
        buf = bytearray()
        append_data(buf, 1, payload, 64 * 1024, True)
        return len(buf)

    benchmark.group = "encode 1 MiB as 64 KiB DATA frames: append_data"
    benchmark.extra_info["frames"] = 16
    assert benchmark(run) == (1 << 20) + 16 * 8


def test_encode_window_update(benchmark: Any, impl: Impl) -> None:
    encode_window_update = impl.frame.encode_window_update

    def run() -> int:
        n = 0
        for i in range(ENCODE_FRAMES):
            n += len(encode_window_update(1, i))
        return n

    benchmark.group = "encode WINDOW UPDATE: encode_window_update"
    benchmark.extra_info["frames"] = ENCODE_FRAMES
    assert benchmark(run) == 8 * ENCODE_FRAMES


# --------------------------------------------------------------------------------------------
# Windows.

WINDOW_OPS = 10_000


def test_send_window_cycle(benchmark: Any, impl: Impl) -> None:
    def run() -> int:
        w = impl.window.SendWindow(256 * 1024)
        sent = 0
        for _ in range(WINDOW_OPS):
            n = w.reserve(1024)  # the writer takes credit for one frame ...
            sent += n
            w.grow(n)  # ... and the peer's WINDOW UPDATE gives it back
        return sent

    benchmark.group = "window: SendWindow reserve + grow"
    benchmark.extra_info["cycles"] = WINDOW_OPS
    assert benchmark(run) == WINDOW_OPS * 1024


def test_recv_window_cycle(benchmark: Any, impl: Impl) -> None:
    def run() -> int:
        r = impl.window.RecvWindow(256 * 1024, 1 << 24)
        updates = 0
        for _ in range(WINDOW_OPS):
            r.receive(1024)  # a DATA frame arrives ...
            updates += r.consume(1024)  # ... and the reader takes it
        return updates

    benchmark.group = "window: RecvWindow receive + consume"
    benchmark.extra_info["cycles"] = WINDOW_OPS
    assert benchmark(run) > 0
