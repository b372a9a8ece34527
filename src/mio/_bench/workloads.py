"""The four workloads, written once against the small client interface every system implements.

W1 bulk      one stream, ``bulk_bytes`` in 64 KiB writes (``write`` + ``drain``), half-close;
             the server reads and discards, then acknowledges the byte count (and CRC-32 of
             the content with ``--verify-content``). Metric: MB/s.
W2 rpc       ``rpc_workers`` concurrent workers; every request opens a NEW stream, sends 64
             bytes and half-closes; the server echoes the 64 bytes and closes. Metric: req/s,
             p50, p99 latency.
W3 streams   ``echo_streams`` streams opened at once, each doing ``echo_roundtrips``
             sequential round trips of ``b"Aa i-j"``, then half-close. Metric: total seconds
             and round trips/s.
W4 fairness  W2 with ``fair_workers`` workers, first alone, then while a W1-style bulk transfer
             runs on another stream of the same session. Metric: p99 with bulk / p99 alone.

Every response is compared with what was sent; a run with a wrong byte is ``ok: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from . import common as C

__all__ = ("WORKLOADS", "Workload", "Client", "BulkSink", "EchoStream")


class BulkSink(Protocol):
    """The sending end of a bulk stream."""

    async def write(self, chunk: bytes) -> None:
        """Send one chunk, waiting while flow control or the transport holds data back."""

    async def finish(self) -> tuple[int, int]:
        """Half-close, wait for the server's acknowledgement: ``(byte count, crc32)``."""


class EchoStream(Protocol):
    """One W3 stream."""

    async def roundtrip(self, msg: bytes) -> bytes:
        """Send ``msg`` and read ``len(msg)`` bytes back."""

    async def finish(self) -> bool:
        """Half-close and wait for the server to end the stream: True if nothing else came."""


class Client(Protocol):
    """What a system offers the workloads (one instance per workload run)."""

    async def connect(self, kind: str) -> None:
        """Connect to the server's ``kind`` listener: ``bulk``, ``echo`` or ``mixed``."""

    async def open_bulk(self) -> BulkSink:
        """Open a bulk stream (on the ``mixed`` listener: before any other stream)."""

    async def request(self, i: int, payload: bytes) -> bytes:
        """W2: one request on a new stream; returns everything the server answered."""

    async def open_echo(self, i: int) -> EchoStream:
        """W3: open echo stream number ``i``."""

    async def close(self) -> None:
        """Close the connection(s)."""


@dataclasses.dataclass(frozen=True)
class Workload:
    """One workload: its driver and how to show its results."""

    name: str
    title: str
    kind: str  # listener the client connects to
    run: Callable[[Client, C.Totals, C.Meter, bool], Awaitable[dict[str, Any]]]
    key: str  # headline metric
    higher_is_better: bool
    describe: Callable[[C.Totals], str]


# ---------------------------------------------------------------------------- drivers
async def _rpc_phase(
    client: Client, total: int, workers: int, first_id: int = 0
) -> tuple[list[int], int]:
    lat: list[int] = []
    bad = 0
    ids = iter(range(first_id, first_id + total))
    perf = time.perf_counter_ns

    async def worker() -> None:
        nonlocal bad
        for i in ids:
            payload = C.rpc_payload(i)
            t0 = perf()
            resp = await client.request(i, payload)
            lat.append(perf() - t0)
            if resp != payload:
                bad += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return lat, bad


async def w1_bulk(client: Client, t: C.Totals, meter: C.Meter, verify: bool) -> dict[str, Any]:
    chunks = C.bulk_chunks()
    n = t.bulk_chunks
    expect_crc = C.bulk_crc(chunks, n) if verify else 0
    await client.connect("bulk")
    meter.start()
    sink = await client.open_bulk()
    if t.bulk_max_s is None:
        for i in range(n):
            await sink.write(chunks[i & 15])
    else:  # scaled-down runs: stop after bulk_max_s seconds (and check what was sent)
        deadline = time.perf_counter() + t.bulk_max_s
        for i in range(n):
            await sink.write(chunks[i & 15])
            if i & 15 == 15 and time.perf_counter() > deadline:
                n = i + 1
                break
    got, crc = await sink.finish()
    meter.stop()
    if verify and n != t.bulk_chunks:
        expect_crc = C.bulk_crc(chunks, n)
    total = n * C.BULK_CHUNK
    ok = got == total and (not verify or crc == expect_crc)
    out: dict[str, Any] = {"ok": ok, "bytes": got, "crc_checked": verify}
    if not ok:
        out["error"] = f"server acknowledged {got} bytes (crc {crc:#x}), sent {total}"
        if verify:
            out["error"] += f" (crc {expect_crc:#x})"
    out["MBps"] = round(got / meter.elapsed / 1e6, 1)
    return out


async def w2_rpc(client: Client, t: C.Totals, meter: C.Meter, verify: bool) -> dict[str, Any]:
    await client.connect("echo")
    meter.start()
    lat, bad = await _rpc_phase(client, t.rpc_requests, t.rpc_workers)
    meter.stop()
    ok = bad == 0 and len(lat) == t.rpc_requests
    out: dict[str, Any] = {"ok": ok, "requests": len(lat), "bad": bad}
    if not ok:
        out["error"] = f"{bad} wrong responses, {len(lat)}/{t.rpc_requests} requests done"
    out["rps"] = round(len(lat) / meter.elapsed, 1)
    out.update(C.latency_summary(lat))
    return out


async def w3_streams(client: Client, t: C.Totals, meter: C.Meter, verify: bool) -> dict[str, Any]:
    await client.connect("echo")
    bad = done = 0

    async def one(i: int) -> None:
        nonlocal bad, done
        stream = await client.open_echo(i)
        for j in range(t.echo_roundtrips):
            msg = C.echo_msg(i, j)
            if await stream.roundtrip(msg) != msg:
                bad += 1
            done += 1
        if not await stream.finish():
            bad += 1

    meter.start()
    await asyncio.gather(*(one(i) for i in range(t.echo_streams)))
    meter.stop()
    total = t.echo_streams * t.echo_roundtrips
    ok = bad == 0 and done == total
    out: dict[str, Any] = {"ok": ok, "roundtrips": done, "bad": bad}
    if not ok:
        out["error"] = f"{bad} wrong echoes or stream ends, {done}/{total} round trips done"
    out["rtps"] = round(done / meter.elapsed, 1)
    out["total_s"] = round(meter.elapsed, 3)
    return out


async def w4_fairness(client: Client, t: C.Totals, meter: C.Meter, verify: bool) -> dict[str, Any]:
    chunks = C.bulk_chunks()
    await client.connect("mixed")
    # The bulk stream is the session's first stream (the server recognises it that way); it
    # stays idle during the first phase.
    sink = await client.open_bulk()
    t0 = time.perf_counter()
    lat_alone, bad_alone = await _rpc_phase(client, t.fair_requests, t.fair_workers)
    alone_s = time.perf_counter() - t0

    stop = False
    sent = 0
    expect_crc = 0
    lead = asyncio.Event()  # set once the bulk transfer is in full swing

    async def pump() -> tuple[int, int]:
        nonlocal sent, expect_crc
        import zlib

        i = 0
        while not stop:
            chunk = chunks[i & 15]
            await sink.write(chunk)
            if verify:
                expect_crc = zlib.crc32(chunk, expect_crc)
            sent += C.BULK_CHUNK
            i += 1
            if sent >= 8 * 1024 * 1024:
                lead.set()
        return await sink.finish()

    bulk = asyncio.ensure_future(pump())
    # let the bulk transfer get going (window auto-tuning, full socket buffers) first
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(lead.wait(), t.fair_lead_s)
    if bulk.done():
        bulk.result()  # the bulk transfer failed: raise its error
    sent0 = sent
    meter.start()
    try:
        lat_bulk, bad_bulk = await _rpc_phase(
            client, t.fair_requests, t.fair_workers, first_id=t.fair_requests
        )
    finally:
        meter.stop()
        stop = True
    bulk_during = sent - sent0
    got, crc = await bulk
    ok_rpc = bad_alone == bad_bulk == 0 and len(lat_alone) == len(lat_bulk) == t.fair_requests
    ok_bulk = got == sent and (not verify or crc == expect_crc)
    out: dict[str, Any] = {"ok": ok_rpc and ok_bulk, "requests": len(lat_alone) + len(lat_bulk)}
    errors = []
    if not ok_rpc:
        errors.append(f"{bad_alone + bad_bulk} wrong responses")
    if not ok_bulk:
        errors.append(
            f"bulk: server acknowledged {got} bytes (crc {crc:#x}), sent {sent}"
            + (f" (crc {expect_crc:#x})" if verify else "")
        )
    if errors:
        out["error"] = "; ".join(errors)
    out.update(C.latency_summary(lat_alone, "alone_"))
    out.update(C.latency_summary(lat_bulk, "bulk_"))
    if lat_alone and lat_bulk:
        out["p99_ratio"] = round(out["bulk_p99_us"] / max(out["alone_p99_us"], 0.1), 2)
    out["alone_rps"] = round(len(lat_alone) / max(alone_s, 1e-9), 1)
    out["bulk_rps"] = round(len(lat_bulk) / meter.elapsed, 1)
    out["bulk_MBps"] = round(bulk_during / meter.elapsed / 1e6, 1)
    out["bulk_bytes"] = got
    out["crc_checked"] = verify
    return out


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "W1",
            "bulk",
            "bulk",
            w1_bulk,
            "MBps",
            True,
            lambda t: (
                f"one stream, {t.bulk_bytes / 2**20:g} MiB in 64 KiB writes"
                + (f" (or {t.bulk_max_s:g} s)" if t.bulk_max_s else "")
            ),
        ),
        Workload(
            "W2",
            "rpc",
            "echo",
            w2_rpc,
            "rps",
            True,
            lambda t: f"{t.rpc_workers} workers, {t.rpc_requests:,} requests, new stream each",
        ),
        Workload(
            "W3",
            "1000 streams",
            "echo",
            w3_streams,
            "rtps",
            True,
            lambda t: f"{t.echo_streams:,} streams at once x {t.echo_roundtrips} round trips",
        ),
        Workload(
            "W4",
            "fairness",
            "mixed",
            w4_fairness,
            "p99_ratio",
            False,
            lambda t: (
                f"W2 at {t.fair_workers} workers ({t.fair_requests:,} requests per phase), "
                "alone then beside a bulk stream of the same session"
            ),
        ),
    )
}
