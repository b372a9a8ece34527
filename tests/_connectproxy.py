"""A small real HTTP CONNECT proxy for the tests (asyncio, 127.0.0.1), Basic auth optional;
with ``tls`` (a server context) it is an ``https://`` proxy, reached over TLS.

It answers ``CONNECT host:port`` with ``200`` and then copies bytes both ways; with
``credentials`` set it wants ``Proxy-Authorization: Basic ...`` and answers ``407`` (with
``Proxy-Authenticate``) otherwise; ``deny`` makes it answer ``403`` to everything. It
records what it was asked (:attr:`requests`) and how many bytes it carried.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator


class ConnectProxy:
    def __init__(
        self,
        credentials: tuple[str, str] | None = None,
        deny: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.credentials = credentials
        self.deny = deny
        self.tls = tls
        #: ``(target, status)`` of every CONNECT request, in order.
        self.requests: list[tuple[str, int]] = []
        self.carried = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, userinfo: str = "") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ssl.SSLError:
            pass  # (a client that does not trust this proxy's certificate)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readexactly(1)
        if not first.isalpha():  # not an HTTP request (a TLS ClientHello?): as squid does
            self.requests.append(("?", 400))
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        rest = await reader.readuntil(b"\r\n\r\n")
        head = (first + rest).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        status = 200
        if method != "CONNECT":
            status = 405
        elif self.deny:
            status = 403
        elif self.credentials is not None:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            if headers.get("proxy-authorization") != f"Basic {token}":
                status = 407
        self.requests.append((target, status))
        if status != 200:
            reason = {
                403: "Forbidden",
                405: "Method Not Allowed",
                407: "Proxy Authentication Required",
            }
            extra = 'Proxy-Authenticate: Basic realm="test"\r\n' if status == 407 else ""
            writer.write(
                f"HTTP/1.1 {status} {reason[status]}\r\n{extra}Content-Length: 0\r\n\r\n".encode()
            )
            await writer.drain()
            return
        host, port = target.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await asyncio.gather(self._copy(reader, up_writer), self._copy(up_reader, writer))
        finally:
            up_writer.close()
            with contextlib.suppress(ConnectionError):
                await up_writer.wait_closed()

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(256 * 1024):
                self.carried += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            writer.transport.abort()


@contextlib.asynccontextmanager
async def connect_proxy(
    credentials: tuple[str, str] | None = None,
    deny: bool = False,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy(credentials, deny, tls)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
