"""HTTP/2 streams with the sans-IO ``h2`` library, driven by ``asyncio.Protocol`` (h2c, no TLS).

Each logical stream is one HTTP/2 stream (``POST /bulk`` or ``POST /echo``). Flow control:

* both sides advertise SETTINGS_INITIAL_WINDOW_SIZE = ``h2_window`` (1 MiB) and raise the
  connection window to ``h2_conn_window`` (16 MiB);
* received DATA is acknowledged at once (h2 emits WINDOW_UPDATE when half the window has
  been consumed);
* outbound DATA never exceeds ``local_flow_control_window()``; the rest waits in a
  per-stream buffer and is pushed on WINDOW_UPDATE / SETTINGS changes;
* DATA frames are at most the peer's SETTINGS_MAX_FRAME_SIZE (``h2_frame_size``, 16 KiB).

Server (one listener for every workload, dispatch on ``:path``): ``/bulk`` counts bytes and
answers ``[u64 count][u32 crc32]`` + END_STREAM; ``/echo`` sends response HEADERS, echoes DATA
as it arrives, ends when the client ends. Client: writes of small messages are coalesced
into one ``transport.write`` per loop iteration.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.settings import SettingCodes, Settings

from .. import common as C
from ._driver import DriverBulk, DriverEcho, StreamReads

DEFAULT_OPTS: dict[str, Any] = {
    "h2_window": 1 << 20,
    "h2_conn_window": 16 << 20,
    "h2_frame_size": 16384,
}


class Stream:
    __slots__ = (
        "buf",
        "count",
        "crc",
        "drain",
        "end_sent",
        "ended",
        "out",
        "out_end",
        "path",
        "reset",
        "sid",
        "waiter",
        "want",
    )

    def __init__(self, sid: int, path: bytes = b"") -> None:
        self.sid = sid
        self.path = path
        self.buf = bytearray()
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None
        self.want = 0
        self.out = bytearray()
        self.out_end = False
        self.end_sent = False
        self.drain: asyncio.Future[None] | None = None
        self.count = 0
        self.crc = 0
        self.reset = False


class H2Endpoint(asyncio.Protocol):
    def __init__(self, client_side: bool, opts: dict[str, Any], stats: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self.opts = opts
        self.stats = stats
        self.conn = H2Connection(H2Configuration(client_side=client_side, header_encoding=None))
        self.streams: dict[int, Stream] = {}
        self.blocked: set[Stream] = set()
        self.flush_scheduled = False
        self.paused = False
        self.resume: asyncio.Future[None] | None = None
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self._got_remote_settings = False
        self._got_settings_ack = False

    # ---- transport plumbing
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        c = self.conn
        # our settings go out in the connection preamble (one SETTINGS frame)
        c.local_settings = Settings(
            client=c.config.client_side,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: 100_000,
                SettingCodes.MAX_HEADER_LIST_SIZE: c.DEFAULT_MAX_HEADER_LIST_SIZE,
                SettingCodes.INITIAL_WINDOW_SIZE: self.opts["h2_window"],
                SettingCodes.MAX_FRAME_SIZE: self.opts["h2_frame_size"],
            },
        )
        c.max_inbound_frame_size = self.opts["h2_frame_size"]
        c.initiate_connection()
        if self.opts["h2_conn_window"] > 65535:
            c.increment_flow_control_window(self.opts["h2_conn_window"] - 65535)
        self.flush()

    def flush(self) -> None:
        self.flush_scheduled = False
        d = self.conn.data_to_send()
        if d:
            self.t.write(d)

    def flush_soon(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def pause_writing(self) -> None:
        self.paused = True
        self.resume = self.loop.create_future()

    def resume_writing(self) -> None:
        self.paused = False
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for st in list(self.streams.values()):
            self._fail(st)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection lost"))
        self.resume_writing()

    def _fail(self, st: Stream) -> None:
        st.reset = True
        for w in (st.waiter, st.drain):
            if w is not None and not w.done():
                w.set_exception(ConnectionError(f"stream {st.sid} reset/lost"))

    # ---- outbound with flow control
    def send(self, st: Stream, data: bytes, end: bool = False) -> None:
        if data:
            st.out += data
        if end:
            st.out_end = True
        self.push(st)

    def push(self, st: Stream) -> None:
        c = self.conn
        out = st.out
        sid = st.sid
        while out:
            win = c.local_flow_control_window(sid)
            if win <= 0:
                self.blocked.add(st)
                return
            n = min(win, len(out), c.max_outbound_frame_size)
            last = n == len(out)
            c.send_data(sid, bytes(out[:n]), end_stream=last and st.out_end)
            del out[:n]
            if last and st.out_end:
                st.end_sent = True
        if st.out_end and not st.end_sent:
            c.end_stream(sid)
            st.end_sent = True
        self.blocked.discard(st)
        if st.drain is not None:
            st.drain.set_result(None)
            st.drain = None
        self.on_sent_all(st)

    def on_sent_all(self, st: Stream) -> None:
        pass

    def push_blocked(self, sid: int = 0) -> None:
        if sid == 0:
            for st in list(self.blocked):
                self.push(st)
        else:
            blocked = self.streams.get(sid)
            if blocked is not None and blocked in self.blocked:
                self.push(blocked)

    # ---- inbound
    def data_received(self, data: bytes) -> None:
        c = self.conn
        ev: Any
        for ev in c.receive_data(data):
            tp = type(ev)
            if tp is DataReceived:
                if ev.flow_controlled_length:
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    self.on_data(st, ev.data)
            elif tp is StreamEnded:
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    self.on_end(st)
            elif tp is WindowUpdated:
                self.push_blocked(ev.stream_id)
            elif tp is RequestReceived:
                self.on_request(ev)
            elif tp is ResponseReceived:
                pass
            elif tp is RemoteSettingsChanged:
                self._got_remote_settings = True
                self.push_blocked(0)
                self._check_ready()
            elif tp is SettingsAcknowledged:
                self._got_settings_ack = True
                self._check_ready()
            elif tp is StreamReset:
                st = self.streams.pop(ev.stream_id, None)
                self.stats["resets"] = self.stats.get("resets", 0) + 1
                if st is not None:
                    self.blocked.discard(st)
                    self._fail(st)
            elif tp is ConnectionTerminated:
                self.stats["terminated"] = str(ev.error_code)
                self.t.close()
        self.flush()

    def _check_ready(self) -> None:
        if self._got_remote_settings and self._got_settings_ack and not self.ready.done():
            self.ready.set_result(None)

    def on_request(self, ev: Any) -> None:
        pass

    def on_data(self, st: Stream, data: bytes) -> None:
        pass

    def on_end(self, st: Stream) -> None:
        pass


class H2Server(H2Endpoint):
    def __init__(self, opts: dict[str, Any], stats: dict[str, Any], verify: bool) -> None:
        super().__init__(False, opts, stats)
        self.verify = verify

    def on_request(self, ev: Any) -> None:
        path = dict(ev.headers).get(b":path", b"")
        self.streams[ev.stream_id] = Stream(ev.stream_id, path)
        if path == b"/echo":
            self.conn.send_headers(ev.stream_id, [(b":status", b"200")])
        # (END_STREAM on HEADERS arrives as a separate StreamEnded event)

    def on_data(self, st: Stream, data: bytes) -> None:
        if st.path == b"/bulk":
            st.count += len(data)
            if self.verify:
                st.crc = zlib.crc32(data, st.crc)
        else:
            self.send(st, data)

    def on_end(self, st: Stream) -> None:
        if st.path == b"/bulk":
            self.stats["bulk_bytes"] = self.stats.get("bulk_bytes", 0) + st.count
            self.conn.send_headers(st.sid, [(b":status", b"200")])
            self.send(st, C.ACK.pack(st.count, st.crc), end=True)
        else:
            self.send(st, b"", end=True)

    def on_sent_all(self, st: Stream) -> None:
        if st.end_sent:
            self.streams.pop(st.sid, None)


class H2Client(StreamReads, H2Endpoint):
    HEADERS = ((b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"127.0.0.1"))

    def __init__(self, opts: dict[str, Any]) -> None:
        super().__init__(True, opts, {})

    def open(self, path: bytes) -> Stream:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [*self.HEADERS, (b":path", path)])
        st = self.streams[sid] = Stream(sid, path)
        self.flush_soon()
        return st

    def send_small(self, st: Stream, data: bytes, end: bool = False) -> None:
        self.send(st, data, end)
        self.flush_soon()

    async def write(self, st: Stream, data: bytes, end: bool = False) -> None:
        """Flow-controlled write with backpressure (bulk)."""
        self.send(st, data, end)
        self.flush()
        if st.out:
            st.drain = self.loop.create_future()
            await st.drain
        if self.paused and self.resume is not None:
            await self.resume

    def on_data(self, st: Stream, data: bytes) -> None:
        st.buf += data
        if st.waiter is not None and len(st.buf) >= st.want:
            st.waiter.set_result(None)
            st.waiter = None

    def on_end(self, st: Stream) -> None:
        st.ended = True
        self.streams.pop(st.sid, None)
        if st.waiter is not None:
            st.waiter.set_result(None)
            st.waiter = None


async def serve(opts: dict[str, Any], stats: dict[str, Any], verify: bool) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    opts = C.merge_opts("h2", DEFAULT_OPTS, opts)
    srv = await loop.create_server(lambda: H2Server(opts, stats, verify), C.HOST, 0, backlog=1024)
    port = srv.sockets[0].getsockname()[1]
    return {"bulk": port, "echo": port, "mixed": port}


class Client:
    def __init__(self, ports: dict[str, int], opts: dict[str, Any], variant: str) -> None:
        self._ports = ports
        self._opts = C.merge_opts("h2", DEFAULT_OPTS, opts)
        self._t: asyncio.Transport | None = None
        self._p: H2Client | None = None

    async def connect(self, kind: str) -> None:
        loop = asyncio.get_running_loop()
        self._t, self._p = await loop.create_connection(
            lambda: H2Client(self._opts), C.HOST, self._ports[kind]
        )
        await self._p.ready

    async def open_bulk(self) -> DriverBulk:
        assert self._p is not None
        return DriverBulk(self._p, self._p.open(b"/bulk"))

    async def request(self, i: int, payload: bytes) -> bytes:
        p = self._p
        assert p is not None
        st = p.open(b"/echo")
        p.send_small(st, payload, end=True)
        return await p.read_to_end(st)

    async def open_echo(self, i: int) -> DriverEcho:
        assert self._p is not None
        return DriverEcho(self._p, self._p.open(b"/echo"))

    async def close(self) -> None:
        if self._t is not None:
            self._t.close()
            self._t = None

    def stats(self) -> dict[str, Any]:
        return {}
