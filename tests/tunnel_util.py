"""Helpers of the ``mio tunnel`` tests: tunnel processes on 127.0.0.1, services, checks.

The process tests start the commands with ``python -m mio.tunnel.cli`` (see :data:`TUNNEL`)
and wait for their readiness lines on stdout; the tunneled services are asyncio servers in
the test process. Every process is killed at teardown if a test left it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from mio.tunnel import auth

#: How the tests run the tunnel commands (``mio tunnel`` runs the same code).
TUNNEL = [sys.executable, "-m", "mio.tunnel.cli"]
HOST = "127.0.0.1"
SECRET = "test-secret-" + os.urandom(12).hex()
WRONG_SECRET = "wrong-secret-" + os.urandom(12).hex()
#: Fast reconnection and short timeouts for every dialer in these tests.
DIALER_OPTS = ["--backoff-initial", "0.1", "--backoff-max", "0.5", "-v"]

#: The process tests stop processes with SIGTERM.
posix = pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals")

ServiceHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Proc:
    """A tunnel command running as a child process; stdout and stderr go to files."""

    def __init__(self, name: str, args: list[str], tmp_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.out_path = tmp_path / f"{name}.out"
        self.err_path = tmp_path / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                [*TUNNEL, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
            )

    def lines(self) -> list[str]:
        return self.out_path.read_text().splitlines()

    @property
    def log(self) -> str:
        return self.err_path.read_text()

    def _fail(self, message: str) -> None:
        pytest.fail(f"{self.name}: {message}\n--- stdout\n{self.out_path.read_text()}"
                    f"--- stderr\n{self.log}")  # fmt: skip

    async def line(self, prefix: str, count: int = 1, timeout: float = 10.0) -> str:
        """The ``count``-th stdout line starting with ``prefix`` (waiting for it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = [line for line in self.lines() if line.startswith(prefix)]
            if len(found) >= count:
                return found[count - 1]
            if self.popen.poll() is not None:
                self._fail(f"exited with {self.popen.returncode} before printing {prefix!r}")
            if loop.time() > deadline:
                self._fail(f"no {prefix!r} line within {timeout} s")
            await asyncio.sleep(0.02)

    async def port(self, prefix: str) -> int:
        return int((await self.line(prefix)).rsplit(":", 1)[1])

    async def wait_log(self, text: str, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while text not in self.log:
            if loop.time() > deadline:
                self._fail(f"{text!r} not logged within {timeout} s")
            await asyncio.sleep(0.02)

    async def wait(self, timeout: float = 10.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.popen.poll() is None:
            if loop.time() > deadline:
                self._fail(f"still running after {timeout} s")
            await asyncio.sleep(0.02)
        return self.popen.returncode

    async def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


class Tunnel:
    """Starts relays, agents and forwarders for one test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []
        self.env = {**os.environ, auth.SECRET_ENV: SECRET}

    def start(self, name: str, *args: str, secret: str = SECRET) -> Proc:
        proc = Proc(name, list(args), self.tmp_path, {**self.env, auth.SECRET_ENV: secret})
        self.procs.append(proc)
        return proc

    async def relay(self, name: str = "relay", *args: str, listen: str = f"{HOST}:0") -> Proc:
        proc = self.start(name, "relay", "--listen", listen, "-v", *args)
        await proc.line("relay listening on")
        return proc

    async def agent(
        self,
        relay: Proc,
        *args: str,
        name: str = "agent",
        tls_args: tuple[str, ...] = (),
        secret: str = SECRET,
    ) -> Proc:
        port = await relay.port("relay listening on")
        proc = self.start(
            name,
            "agent",
            "--relay",
            f"{HOST}:{port}",
            *DIALER_OPTS,
            *tls_args,
            *args,
            secret=secret,
        )
        await proc.line("agent connected to")
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


@contextlib.asynccontextmanager
async def service(handler: ServiceHandler):  # type: ignore[no-untyped-def]
    """A TCP service in the test process; yields ``NAME=HOST:PORT``-ready ``HOST:PORT``."""

    tasks: set[asyncio.Task[None]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(run, HOST, 0)
    try:
        yield f"{HOST}:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send everything back; half-close after the client's half-close."""
    while chunk := await reader.read(256 * 1024):
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()


async def roundtrip(port: int, size: int, *, chunk: int = 256 * 1024) -> None:
    """Send ``size`` random bytes, half-close, and check the echo (length and sha256)."""
    payload = os.urandom(size)
    reader, writer = await asyncio.open_connection(HOST, port)
    try:

        async def send() -> None:
            for i in range(0, size, chunk):
                writer.write(payload[i : i + chunk])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        digest = hashlib.sha256()
        received = 0
        while data := await reader.read(256 * 1024):
            digest.update(data)
            received += len(data)
        await sender
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert received == size
    assert digest.digest() == hashlib.sha256(payload).digest()


async def assert_closed(port: int, timeout: float = 5.0) -> None:
    """A connection to ``port`` is accepted and then closed (EOF or reset) without data."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        try:
            data = await asyncio.wait_for(reader.read(), timeout)
        except ConnectionResetError:
            data = b""
        assert data == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def refused(port: int, timeout: float = 5.0) -> None:
    """Wait until connections to ``port`` are refused."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except ConnectionRefusedError:
            return
        writer.close()
        assert loop.time() < deadline, f"port {port} still accepts connections"
        await asyncio.sleep(0.02)


def tls_files(tmp_path: Path) -> tuple[str, str, str]:
    """A throwaway CA (trustme) and a relay certificate for 127.0.0.1 and localhost, as
    files in ``tmp_path``: ``(certificate chain, key, CA)``."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    cert_path, key_path, ca_path = (tmp_path / n for n in ("relay.crt", "relay.key", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    return str(cert_path), str(key_path), str(ca_path)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tunnel(tmp_path: Path) -> Iterator[Tunnel]:
    """Relays, agents and forwarders of one test, killed at teardown."""
    t = Tunnel(tmp_path)
    try:
        yield t
    finally:
        t.close()


async def ping(port: int, local: str = HOST) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``port`` (from ``local``) that an echo service has answered once,
    so it is surely tunneled end to end."""
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(local, 0))
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    return reader, writer
