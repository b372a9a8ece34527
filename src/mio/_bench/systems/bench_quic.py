"""QUIC streams with aioquic over loopback UDP (TLS 1.3, self-signed ECDSA certificate).

Uses aioquic's ``QuicConnectionProtocol`` but handles ``QuicConnection`` events directly
(aioquic's StreamReader/StreamWriter adapter has no write backpressure). Configuration (both
sides): ``max_data`` = ``quic_max_data`` (64 MiB), ``max_stream_data`` =
``quic_max_stream_data`` (16 MiB), initial MAX_STREAMS_BIDI raised from aioquic's hard-coded
128 to ``quic_max_streams`` (2048) through a private attribute (no public knob),
``max_datagram_size`` = ``quic_datagram_size`` (aioquic's default 1200), SO_RCVBUF =
``quic_rcvbuf`` (4 MiB). Bulk writer backpressure: waits while the stream's unacknowledged
send buffer exceeds 4 MiB. ``quic_no_pacing=1`` disables aioquic's packet pacer (diagnostic).

Listeners: ``bulk``, ``echo`` and ``mixed`` (W4: stream 0, the client's first bidirectional
stream, is the bulk stream; every other stream is echoed).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import zlib
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

from aioquic.asyncio.client import connect as quic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve as quic_serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset

from .. import common as C
from ._driver import DriverBulk, DriverEcho, StreamReads

ALPN = ["mio-bench"]
BULK_HIGH = 4 << 20
BULK_LOW = 2 << 20
DEFAULT_OPTS: dict[str, Any] = {
    "quic_max_data": 64 << 20,
    "quic_max_stream_data": 16 << 20,
    "quic_max_streams": 2048,
    "quic_datagram_size": 1200,
    "quic_cc": "reno",
    "quic_no_pacing": False,
    "quic_rcvbuf": 4 << 20,
}


def make_cert() -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _never(self: Any, now: float) -> float | None:
    return None


def make_config(opts: dict[str, Any], is_client: bool) -> QuicConfiguration:
    if opts["quic_no_pacing"]:
        # aioquic's pacer clamps packet_time to >= 1 us while bucket_max shrinks with the
        # rate, so on loopback each pacing timer (>= 1 ms) releases about one datagram.
        from aioquic.quic.recovery import QuicPacketPacer

        QuicPacketPacer.next_send_time = _never  # type: ignore[method-assign, assignment]
    cfg = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=ALPN,
        max_data=opts["quic_max_data"],
        max_stream_data=opts["quic_max_stream_data"],
        max_datagram_size=opts["quic_datagram_size"],
        congestion_control_algorithm=opts["quic_cc"],
        idle_timeout=120.0,
    )
    if is_client:
        cfg.verify_mode = ssl.CERT_NONE
    return cfg


def _set_rcvbuf(transport: Any, size: int) -> None:
    if size:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def udp_rcvbuf_errors() -> int | None:
    """Kernel-wide UDP receive-buffer drops (to spot QUIC packet loss on loopback)."""
    try:
        with open("/proc/net/snmp") as f:
            lines = [line.split() for line in f if line.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return None


class Stream:
    __slots__ = ("buf", "count", "crc", "drain", "ended", "reset", "sid", "waiter", "want")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.buf = bytearray()
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None
        self.want = 0
        self.drain: asyncio.Future[None] | None = None
        self.count = 0
        self.crc = 0
        self.reset = False


class QuicEndpoint(QuicConnectionProtocol):
    def __init__(
        self,
        quic: Any,
        stream_handler: Any = None,
        *,
        opts: dict[str, Any],
        stats: dict[str, Any] | None = None,
        mode: str = "",
        verify: bool = False,
    ) -> None:
        # aioquic hard-codes 128 initial bidi streams; raise it before the handshake
        # encodes our transport parameters.
        quic._local_max_streams_bidi.value = opts["quic_max_streams"]
        super().__init__(quic, stream_handler)
        self.opts = opts
        self.stats = stats if stats is not None else {}
        self.mode = mode
        self.verify = verify
        self.streams: dict[int, Stream] = {}
        self.drains: list[Stream] = []

    def quic_event_received(self, ev: Any) -> None:
        tp = type(ev)
        if tp is StreamDataReceived:
            st = self.streams.get(ev.stream_id)
            if st is None:
                st = self.new_peer_stream(ev.stream_id)
                if st is None:
                    return
            self.on_data(st, ev.data, ev.end_stream)
        elif tp is StreamReset:
            self.stats["resets"] = self.stats.get("resets", 0) + 1
            st = self.streams.pop(ev.stream_id, None)
            if st is not None:
                self._fail(st)
        elif tp is ConnectionTerminated:
            self.stats["terminated"] = f"{ev.error_code} {ev.reason_phrase}"
            for st in list(self.streams.values()):
                self._fail(st)
            for st in self.drains:
                self._fail(st)

    def _fail(self, st: Stream) -> None:
        st.reset = True
        for w in (st.waiter, st.drain):
            if w is not None and not w.done():
                w.set_exception(ConnectionError(f"stream {st.sid} reset/terminated"))

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        if self.drains:
            keep = []
            for st in self.drains:
                s = self._quic._streams.get(st.sid)
                if s is None or s.sender._buffer_stop - s.sender._buffer_start <= BULK_LOW:
                    if st.drain is not None and not st.drain.done():
                        st.drain.set_result(None)
                    st.drain = None
                else:
                    keep.append(st)
            self.drains = keep

    def new_peer_stream(self, sid: int) -> Stream | None:
        return None

    def on_data(self, st: Stream, data: bytes, end: bool) -> None:
        pass


class QuicServerProto(QuicEndpoint):
    def new_peer_stream(self, sid: int) -> Stream | None:
        st = self.streams[sid] = Stream(sid)
        return st

    def on_data(self, st: Stream, data: bytes, end: bool) -> None:
        if self.mode == "bulk" or (self.mode == "mixed" and st.sid == 0):
            st.count += len(data)
            if self.verify and data:
                st.crc = zlib.crc32(data, st.crc)
            if end:
                self.stats["bulk_bytes"] = self.stats.get("bulk_bytes", 0) + st.count
                self._quic.send_stream_data(st.sid, C.ACK.pack(st.count, st.crc), end_stream=True)
                del self.streams[st.sid]
        else:
            if data or end:
                self._quic.send_stream_data(st.sid, data, end_stream=end)
            if end:
                del self.streams[st.sid]
        # datagram_received() calls transmit() after all events are processed


class QuicClientProto(StreamReads, QuicEndpoint):
    def open(self) -> Stream:
        sid = self._quic.get_next_available_stream_id()
        st = self.streams[sid] = Stream(sid)
        return st

    def send_small(self, st: Stream, data: bytes, end: bool = False) -> None:
        self._quic.send_stream_data(st.sid, data, end_stream=end)
        self._transmit_soon()

    async def write(self, st: Stream, data: bytes, end: bool = False) -> None:
        self._quic.send_stream_data(st.sid, data, end_stream=end)
        s = self._quic._streams[st.sid].sender
        if s._buffer_stop - s._buffer_start > BULK_HIGH:
            self.transmit()
            st.drain = self._loop.create_future()
            self.drains.append(st)
            await st.drain
        else:
            self._transmit_soon()

    def on_data(self, st: Stream, data: bytes, end: bool) -> None:
        if data:
            st.buf += data
        if end:
            st.ended = True
            self.streams.pop(st.sid, None)
        if st.waiter is not None and (end or len(st.buf) >= st.want):
            st.waiter.set_result(None)
            st.waiter = None


async def serve(opts: dict[str, Any], stats: dict[str, Any], verify: bool) -> dict[str, int]:
    opts = C.merge_opts("quic", DEFAULT_OPTS, opts)
    cert, key = make_cert()
    ports = {}
    for mode in ("bulk", "echo", "mixed"):
        cfg = make_config(opts, False)
        cfg.certificate, cfg.private_key = cert, key

        def factory(q: Any, stream_handler: Any = None, mode: str = mode) -> QuicServerProto:
            return QuicServerProto(
                q, stream_handler, opts=opts, stats=stats, mode=mode, verify=verify
            )

        srv = await quic_serve(C.HOST, 0, configuration=cfg, create_protocol=factory)
        transport: Any = srv._transport
        _set_rcvbuf(transport, opts["quic_rcvbuf"])
        ports[mode] = transport.get_extra_info("sockname")[1]
    return ports


class Client:
    def __init__(self, ports: dict[str, int], opts: dict[str, Any], variant: str) -> None:
        self._ports = ports
        self._opts = C.merge_opts("quic", DEFAULT_OPTS, opts)
        self._ctx: AbstractAsyncContextManager[Any] | None = None
        self._p: QuicClientProto | None = None
        self._drops0: int | None = None

    async def connect(self, kind: str) -> None:
        opts = self._opts

        def factory(q: Any, stream_handler: Any = None) -> QuicClientProto:
            return QuicClientProto(q, stream_handler, opts=opts)

        self._ctx = quic_connect(
            C.HOST,
            self._ports[kind],
            configuration=make_config(opts, True),
            create_protocol=factory,
        )
        self._p = p = cast(QuicClientProto, await self._ctx.__aenter__())
        self._drops0 = udp_rcvbuf_errors()
        _set_rcvbuf(p._transport, opts["quic_rcvbuf"])

    async def open_bulk(self) -> DriverBulk:
        p = self._p
        assert p is not None
        st = p.open()
        # create the stream now, so that the next stream gets the next id even while this
        # one has not sent anything yet (W4 keeps it idle during its first phase)
        p._quic.send_stream_data(st.sid, b"")
        return DriverBulk(p, st)

    async def request(self, i: int, payload: bytes) -> bytes:
        p = self._p
        assert p is not None
        st = p.open()
        p.send_small(st, payload, end=True)
        return await p.read_to_end(st)

    async def open_echo(self, i: int) -> DriverEcho:
        assert self._p is not None
        return DriverEcho(self._p, self._p.open())

    async def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            await ctx.__aexit__(None, None, None)

    def stats(self) -> dict[str, Any]:
        if self._p is None:
            return {}
        out: dict[str, Any] = {}
        drops = udp_rcvbuf_errors()
        if drops is not None and self._drops0 is not None:
            out["udp_rcvbuf_drops"] = drops - self._drops0
        try:
            loss = self._p._quic._loss
            out["client_cwnd"] = loss._cc.congestion_window
            out["client_srtt_ms"] = round(loss._rtt_smoothed * 1000, 3)
        except AttributeError:
            pass
        return out
