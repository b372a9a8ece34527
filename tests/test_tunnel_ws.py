"""The relay link over WebSocket (``ws://``/``wss://``), directly and through a real HTTP
CONNECT proxy (:mod:`_connectproxy`): the adapter :mod:`mio._ws` on real sockets, then
relay/agent/forward processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _connectproxy import ConnectProxy, connect_proxy
from test_tunnel_metrics import scrape
from tunnel_util import (
    DIALER_OPTS,
    HOST,
    WRONG_SECRET,
    Proc,
    Tunnel,
    echo,
    free_port,
    posix,
    roundtrip,
    service,
    tls_files,
)
from tunnel_util import tunnel as tunnel  # the fixture

websockets = pytest.importorskip("websockets")

from websockets.asyncio.client import connect as ws_connect  # noqa: E402
from websockets.asyncio.server import serve as ws_serve  # noqa: E402

from mio import _ws  # noqa: E402
from mio.session import Session  # noqa: E402
from mio.tunnel import cli  # noqa: E402
from mio.tunnel.wsaddr import (  # noqa: E402
    DEFAULT_PATH,
    RelayURL,
    choose_proxy,
    parse_proxy,
    parse_relay_url,
)
from mio.tunnel.wslink import TLS_REQUIRED_WS  # noqa: E402

_PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")
_WS = {"max_size": _ws.MAX_MESSAGE, "max_queue": _ws.MAX_QUEUE, "ping_interval": None}


# ============================================================================ addresses
def test_relay_urls() -> None:
    assert parse_relay_url("ws://relay.example") == RelayURL(
        False, "relay.example", 80, DEFAULT_PATH
    )
    assert parse_relay_url("wss://relay.example/t?x=1") == RelayURL(
        True, "relay.example", 443, "/t?x=1"
    )
    url = parse_relay_url("wss://[::1]:8443/mio")
    assert (url.host, url.port, url.url) == ("::1", 8443, "wss://[::1]:8443/mio")
    for bad, why in [
        ("http://relay:80", "not a ws:// or wss:// URL"),
        ("ws://:80/x", "no host"),
        ("ws://relay:99999", "bad port"),
        ("ws://u:p@relay/", "user names"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_relay_url(bad)


def test_proxy_addresses_hide_the_password() -> None:
    proxy = parse_proxy("http://alice:s%40cret@proxy.example:3128")
    assert (proxy.host, proxy.port, proxy.username) == ("proxy.example", 3128, "alice")
    assert proxy.url == "http://alice:s%40cret@proxy.example:3128"
    assert str(proxy) == "http://proxy.example:3128"  # what the logs show
    assert parse_proxy("proxy.example").port == 8080
    assert not parse_proxy("proxy.example").secure
    secure = parse_proxy("https://bob:pw@tls-proxy.example")
    assert (secure.secure, secure.port, secure.username) == (True, 443, "bob")
    assert secure.url == "https://bob:pw@tls-proxy.example:443"
    assert str(secure) == "https://tls-proxy.example:443"
    assert parse_proxy("https://[::1]:8443").url == "https://[::1]:8443"
    for bad, why in [
        ("socks5://proxy:1080", "only http:// and https:// proxies"),
        ("ftp://proxy:21", "only http:// and https:// proxies"),
        ("http://alice@proxy:3128", "USER:PASSWORD"),
        ("https://proxy:3128/path", "no path"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_proxy(bad)
    with pytest.raises(ValueError, match=r"--proxy socks5://alice:\*\*\*@proxy") as info:
        parse_proxy("socks5://alice:hunter2@proxy:1080")
    assert "hunter2" not in str(info.value)


def test_proxy_from_the_environment() -> None:
    wss = parse_relay_url("wss://relay.example/mio")
    ws = parse_relay_url("ws://relay.example/mio")
    env = {"HTTPS_PROXY": "http://tls-proxy:1", "HTTP_PROXY": "http://plain-proxy:2"}

    def host(relay: RelayURL, environ: dict[str, str], **kw: Any) -> str | None:
        proxy = choose_proxy(relay, kw.pop("explicit", None), environ=environ, **kw)
        return None if proxy is None else proxy.host

    assert host(wss, env) == "tls-proxy"  # wss:// uses HTTPS_PROXY
    assert host(ws, env) == "plain-proxy"  # ws:// uses HTTP_PROXY
    assert host(wss, {"https_proxy": "http://lower:1"}) == "lower"
    assert host(wss, {"HTTP_PROXY": "http://plain-proxy:2"}) is None  # not for wss://
    assert host(ws, {"HTTPS_PROXY": "http://tls-proxy:1"}) is None  # not for ws://
    assert host(wss, {**env, "NO_PROXY": "other.example,.example"}) is None
    assert host(wss, {**env, "no_proxy": "relay.example"}) is None
    assert host(wss, {**env, "NO_PROXY": "*"}) is None
    assert host(wss, {**env, "NO_PROXY": "other.example"}) == "tls-proxy"
    assert host(wss, env, no_proxy=True) is None
    # --proxy wins over the environment and over NO_PROXY.
    assert host(wss, {**env, "NO_PROXY": "*"}, explicit="http://mine:3") == "mine"
    with pytest.raises(ValueError, match=r"\$HTTPS_PROXY .*only http://"):
        choose_proxy(wss, None, environ={"HTTPS_PROXY": "socks5://x:1"})


def test_ws_modules_name_the_extra_without_websockets() -> None:
    code = (
        "import sys; sys.modules['websockets'] = None\n"
        "for name in ('mio._ws', 'mio.tunnel.wslink'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError as exc:\n"
        "        print(name, exc)\n"
        "    else:\n"
        "        print(name, 'imported')\n"
        "from mio.tunnel import cli\n"  # the tunnel itself still works
        "sys.exit(cli.main(['agent', '--relay', 'ws://127.0.0.1:1/x', '--service', "
        "'a=127.0.0.1:1']))\n"
    )
    env = {**os.environ, "MIO_TUNNEL_SECRET": "x" * 32}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done
    for line in lines:
        assert "pip install 'mio-mux[ws]'" in line, line
    assert done.returncode == cli.EXIT_USAGE, done
    assert "--relay ws://127.0.0.1:1/x" in done.stderr
    assert "pip install 'mio-mux[ws]'" in done.stderr


def test_help_lists_the_websocket_options(capsys: pytest.CaptureFixture[str]) -> None:
    for command, needles in {
        "relay": ["--ws-listen", "--ws-path", DEFAULT_PATH, "wss://"],
        "agent": ["--relay", "ws://HOST[:PORT][/PATH]", "--proxy", "--no-proxy", "HTTPS_PROXY"],
        "forward": ["ws://HOST[:PORT][/PATH]", "--proxy", "--no-proxy", "NO_PROXY"],
    }.items():
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for needle in needles:
            assert needle in text, (command, needle)


# ============================================================================ the adapter
@contextlib.asynccontextmanager
async def ws_pair(server_protocol: Any, client_protocol: Any) -> AsyncIterator[Any]:
    """A WebSocket on 127.0.0.1 with ``server_protocol()`` and ``client_protocol()``
    attached at each end (:func:`mio._ws.attach`); yields the two transports."""
    loop = asyncio.get_running_loop()
    server_side: asyncio.Future[Any] = loop.create_future()
    handlers_done = asyncio.Event()

    async def handler(connection: Any) -> None:
        protocol = server_protocol()
        server_side.set_result(_ws.attach(connection, protocol))
        await connection.wait_closed()
        handlers_done.set()

    async with ws_serve(handler, HOST, 0, compression=None, **_WS) as server:
        port = server.sockets[0].getsockname()[1]
        connection = await ws_connect(f"ws://{HOST}:{port}/", compression=None, proxy=None, **_WS)
        client = _ws.attach(connection, client_protocol())
        try:
            yield await server_side, client
        finally:
            client.abort()
            if server_side.done():
                server_side.result().abort()
            await connection.wait_closed()
            await asyncio.wait_for(handlers_done.wait(), 5)
            for transport in (client, await server_side):
                task = transport._task
                assert task is not None
                await asyncio.wait_for(task, 5)


async def _echo_stream(stream: Any) -> None:
    while data := await stream.read(256 * 1024):
        stream.write(data)
        await stream.drain()
    stream.write_eof()


async def test_sessions_over_a_websocket_carry_bulk_data_intact() -> None:
    def server() -> Session:
        return Session(client=False, handler=_echo_stream)

    client = Session(client=True)
    async with ws_pair(server, lambda: client):
        payload = os.urandom(4 * 1024 * 1024)

        async def one(size: int) -> None:
            stream = await client.open_stream()
            data = payload[:size]

            async def send() -> None:
                for i in range(0, size, 1024 * 1024):  # writes larger than MAX_MESSAGE
                    stream.write(data[i : i + 1024 * 1024])
                    await stream.drain()
                stream.write_eof()

            sender = asyncio.ensure_future(send())
            digest, received = hashlib.sha256(), 0
            while chunk := await stream.read(256 * 1024):
                digest.update(chunk)
                received += len(chunk)
            await sender
            assert received == size
            assert digest.digest() == hashlib.sha256(data).digest()

        await asyncio.gather(one(len(payload)), *(one(100_000 + i) for i in range(8)))
        await client.aclose()
        assert "closed locally" in str(client.close_error)


class _Recorder(asyncio.Protocol):
    """Records what the transport tells it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.events: list[str] = []
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.events.append("eof")
        return False

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_flow_control_both_ways() -> None:
    """A receiver that stops reading holds a bounded amount and pushes back to the
    sender (pause_writing); once it reads again everything arrives, in order."""
    receivers: list[_Recorder] = []

    def receiver() -> _Recorder:
        receivers.append(_Recorder())
        return receivers[-1]

    sender = _Recorder()
    async with ws_pair(receiver, lambda: sender) as (rx, tx):
        # TUNNEL.md: at most 4 messages queued while the session does not read.
        assert _ws.MAX_QUEUE == (4, 2)
        assert rx.get_extra_info("websocket").max_queue_high == 4
        rx.pause_reading()
        assert not rx.is_reading()
        tx.set_write_buffer_limits(high=256 * 1024)
        payload = os.urandom(16 * 1024 * 1024)
        for i in range(0, len(payload), 64 * 1024):
            tx.write(payload[i : i + 64 * 1024])
        await asyncio.sleep(0.3)  # let the sender push what it can
        assert sender.events == ["pause"]
        # The paused receiver holds at most websockets' queue of messages, the socket
        # buffers the rest: far less than was sent.
        assert len(receivers[0].data) == 0
        assert tx.get_write_buffer_size() > 256 * 1024  # still paused: the queue is not drained
        rx.resume_reading()
        await _until(lambda: len(receivers[0].data) == len(payload), 30)
        assert bytes(receivers[0].data) == payload
        assert sender.events == ["pause", "resume"]


async def test_close_mapping() -> None:
    """A close frame from the peer is an EOF, then connection_lost(None); an abnormal
    end is connection_lost with a ConnectionResetError saying so; a text message is a
    protocol violation, said as such."""
    peers: list[_Recorder] = []

    def peer() -> _Recorder:
        peers.append(_Recorder())
        return peers[-1]

    me = _Recorder()
    async with ws_pair(peer, lambda: me) as (theirs, mine):
        mine.write(b"last words")
        mine.close()
        assert mine.is_closing()
        mine.write(b"ignored after close")
        assert await asyncio.wait_for(peers[0].lost, 5) is None
        assert peers[0].events == ["eof", "lost"]
        assert bytes(peers[0].data) == b"last words"
        assert await asyncio.wait_for(me.lost, 5) is None
        assert me.events == ["lost"]  # we closed: no EOF reported to us

    me = _Recorder()
    async with ws_pair(peer, lambda: me) as (theirs, mine):
        theirs.get_extra_info("websocket").transport.abort()  # the peer's TCP goes away
        exc = await asyncio.wait_for(me.lost, 5)
        assert isinstance(exc, ConnectionResetError)
        assert "WebSocket connection closed" in str(exc)
        assert "eof" not in me.events

    me = _Recorder()
    async with ws_pair(peer, lambda: me) as (theirs, mine):
        await theirs.get_extra_info("websocket").send("a text message")
        exc = await asyncio.wait_for(me.lost, 5)
        assert isinstance(exc, ConnectionResetError)
        assert "text message" in str(exc)

    # TUNNEL.md: messages of at most 256 KiB; a larger one from the peer ends the link.
    assert _ws.MAX_MESSAGE == 256 * 1024
    me = _Recorder()
    async with ws_pair(peer, lambda: me) as (theirs, mine):
        await theirs.get_extra_info("websocket").send(bytes(_ws.MAX_MESSAGE))  # the limit: fine
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await theirs.get_extra_info("websocket").send(bytes(_ws.MAX_MESSAGE + 1))
        exc = await asyncio.wait_for(me.lost, 5)
        assert isinstance(exc, ConnectionResetError)
        assert "1009 (message too big)" in str(exc)
        assert len(me.data) == _ws.MAX_MESSAGE


async def test_the_session_ends_when_the_websocket_closes() -> None:
    peers: list[Session] = []

    def server() -> Session:
        peers.append(Session(client=False, handler=_echo_stream))
        return peers[-1]

    client = Session(client=True)
    async with ws_pair(server, lambda: client) as (theirs, _):
        stream = await client.open_stream()
        stream.write(b"x")
        assert await stream.readexactly(1) == b"x"
        await theirs.get_extra_info("websocket").close()  # a clean close, without a FIN
        await asyncio.wait_for(client.wait_closed(), 5)
        assert "EOF" in str(client.close_error)
        with pytest.raises(Exception, match="EOF"):
            await stream.read()

    client = Session(client=True)
    async with ws_pair(server, lambda: client) as (theirs, _):
        stream = await client.open_stream()
        theirs.get_extra_info("websocket").transport.abort()
        await asyncio.wait_for(client.wait_closed(), 5)
        assert "WebSocket connection closed" in str(client.close_error)
    await asyncio.gather(*(p.wait_closed() for p in peers))


# ============================================================================ processes
@pytest.fixture
def ws_tunnel(tunnel: Tunnel) -> Tunnel:
    """:func:`tunnel` without proxy settings inherited from the environment."""
    for name in _PROXY_VARS:
        tunnel.env.pop(name, None)
    return tunnel


async def ws_relay(tunnel: Tunnel, *args: str, name: str = "relay") -> tuple[Proc, str]:
    """A relay with ``--ws-listen``; with its WebSocket URL."""
    proc = await tunnel.relay(name, "--ws-listen", f"{HOST}:0", *args)
    url = (await proc.line("relay websocket on")).split()[-1]
    return proc, url


def ws_agent(tunnel: Tunnel, url: str, *args: str, name: str = "agent", **kw: Any) -> Proc:
    return tunnel.start(name, "agent", "--relay", url, *DIALER_OPTS, *args, **kw)


@posix
@pytest.mark.timeout(40)
async def test_agent_and_forward_over_ws_carry_bulk_data_intact(ws_tunnel: Tunnel) -> None:
    metrics_port = free_port()
    async with service(echo) as echo_addr:
        relay, url = await ws_relay(
            ws_tunnel, "--public", f"echo={HOST}:0", "--metrics", str(metrics_port)
        )
        assert url.startswith(f"ws://{HOST}:")
        assert url.endswith(DEFAULT_PATH)
        agent = ws_agent(ws_tunnel, url, "--service", f"echo={echo_addr}", "--metrics", "0")
        assert (await agent.line("agent connected to")) == f"agent connected to {url}"
        port = await relay.port("public echo on")
        await asyncio.gather(*(roundtrip(port, 3 * 1024 * 1024) for _ in range(2)))
        forward = ws_tunnel.start(
            "forward", "forward", "--listen", f"{HOST}:0", "--relay", url, "--to", "echo",
            *DIALER_OPTS,
        )  # fmt: skip
        await forward.line("forward connected to")
        await roundtrip(await forward.port("forward listening on"), 2 * 1024 * 1024)
        _, samples = await scrape(metrics_port)
        assert samples['mio_tunnel_links{transport="websocket"}'] == 2  # agent + forwarder
        assert samples['mio_tunnel_links{transport="tcp"}'] == 0
        agent_metrics = int((await agent.line("metrics on")).rsplit(":", 1)[1].split("/")[0])
        _, samples = await scrape(agent_metrics)
        assert samples['mio_tunnel_agent_link_info{transport="ws",proxy="no"}'] == 1
        assert "plain WebSocket (ws://)" in agent.log
        for proc in (relay, agent):  # -v: websockets' per-frame DEBUG lines only from -vv
            assert "websockets" not in proc.log
        # Graceful end: every process exits 0.
        for proc in (forward, agent, relay):
            assert await proc.stop() == 0


async def through_the_proxy(
    relay: Proc, agent: Proc, url: str, proxy: ConnectProxy, size: int
) -> None:
    """The agent says it reached ``url`` via ``proxy``, which saw one CONNECT to the relay,
    and an echo of ``size`` octets through the tunnel really crosses the proxy."""
    line = await agent.line("agent connected to")
    assert line == f"agent connected to {url} via the proxy {proxy.url()}"
    ws_port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert proxy.requests == [(f"{HOST}:{ws_port}", 200)]
    before = proxy.carried
    await roundtrip(await relay.port("public echo on"), size)
    assert proxy.carried - before > 2 * size


@posix
@pytest.mark.timeout(40)
async def test_wss_through_a_proxy_with_basic_auth(ws_tunnel: Tunnel, tmp_path: Path) -> None:
    cert, key, ca = tls_files(tmp_path)
    async with service(echo) as echo_addr, connect_proxy(("alice", "s3cret:x")) as proxy:
        relay, url = await ws_relay(
            ws_tunnel, "--public", f"echo={HOST}:0", "--tls-cert", cert, "--tls-key", key
        )
        assert url.startswith("wss://")
        agent = ws_agent(
            ws_tunnel, url, "--service", f"echo={echo_addr}", "--tls-ca", ca,
            "--proxy", proxy.url("alice:s3cret%3Ax"),
        )  # fmt: skip
        await through_the_proxy(relay, agent, url, proxy, 3 * 1024 * 1024)
        assert "s3cret" not in agent.log
        # The relay's fingerprint pins over wss:// too (channel binding included).
        fingerprint = (await relay.line("relay tls-fingerprint")).split()[-1]
        pinned = ws_agent(
            ws_tunnel, url, "--service", f"echo={echo_addr}", "--tls-fingerprint", fingerprint,
            "--proxy", proxy.url("alice:s3cret%3Ax"), name="pinned",
        )  # fmt: skip
        await pinned.line("agent connected to")


@posix
@pytest.mark.timeout(40)
async def test_wss_through_a_proxy_on_uvloop(ws_tunnel: Tunnel, tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    cert, key, ca = tls_files(tmp_path)
    async with service(echo) as echo_addr, connect_proxy() as proxy:
        relay, url = await ws_relay(
            ws_tunnel, "--public", f"echo={HOST}:0", "--tls-cert", cert, "--tls-key", key,
            "--loop", "uvloop",
        )  # fmt: skip
        agent = ws_agent(
            ws_tunnel, url, "--service", f"echo={echo_addr}", "--tls-ca", ca,
            "--proxy", proxy.url(), "--loop", "uvloop",
        )  # fmt: skip
        await agent.line("agent connected to")
        port = await relay.port("public echo on")
        await asyncio.gather(*(roundtrip(port, 1024 * 1024) for _ in range(3)))
        for proc in (relay, agent):
            assert "event loop: uvloop.Loop" in proc.log
        for proc in (agent, relay):
            assert await proc.stop() == 0


def proxy_tls(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """Server context of an https:// test proxy (its own CA, not the relay's) and the CA."""
    (tmp_path / "proxy").mkdir()
    cert, key, ca = tls_files(tmp_path / "proxy")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, ca


@posix
@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", ["auto", "asyncio"])
async def test_wss_through_an_https_proxy(ws_tunnel: Tunnel, tmp_path: Path, loop: str) -> None:
    # TLS to the proxy (its CA: --proxy-ca), and inside the CONNECT tunnel TLS to the relay
    # (another CA: --tls-ca), with Basic credentials sent over the proxy's TLS.
    cert, key, ca = tls_files(tmp_path)
    proxy_context, proxy_ca = proxy_tls(tmp_path)
    proxied = connect_proxy(("alice", "pw"), tls=proxy_context)
    async with service(echo) as echo_addr, proxied as proxy:
        relay, url = await ws_relay(
            ws_tunnel, "--public", f"echo={HOST}:0", "--tls-cert", cert, "--tls-key", key
        )
        agent = ws_agent(
            ws_tunnel, url, "--service", f"echo={echo_addr}", "--tls-ca", ca,
            "--proxy", proxy.url("alice:pw"), "--proxy-ca", proxy_ca, "--loop", loop,
        )  # fmt: skip
        await through_the_proxy(relay, agent, url, proxy, 2 * 1024 * 1024)
        assert "alice:pw" not in agent.log
        assert await agent.stop() == 0


@posix
@pytest.mark.timeout(60)
async def test_https_proxy_errors_name_the_proxy(ws_tunnel: Tunnel, tmp_path: Path) -> None:
    proxy_context, proxy_ca = proxy_tls(tmp_path)
    async with service(echo) as echo_addr, connect_proxy(tls=proxy_context) as proxy:
        relay, url = await ws_relay(ws_tunnel, "--public", f"echo={HOST}:0")
        # Its certificate is not from a CA the system trusts: no --proxy-ca, no retrying.
        untrusted = ws_agent(
            ws_tunnel, url, "--service", f"echo={echo_addr}", "--proxy", proxy.url(),
            name="untrusted",
        )  # fmt: skip
        assert await untrusted.wait(20) == cli.EXIT_AUTH
        assert f"the proxy https://127.0.0.1:{proxy.port} has an untrusted TLS certificate" in (
            untrusted.log
        )
        assert "give --proxy-ca FILE" in untrusted.log
        assert "the relay" not in untrusted.log.split("untrusted TLS certificate")[0][-200:]
        # The right CA: a ws:// relay through an https:// proxy.
        trusted = ws_agent(
            ws_tunnel, url, "--service", f"echo={echo_addr}", "--proxy", proxy.url(),
            "--proxy-ca", proxy_ca, name="trusted",
        )  # fmt: skip
        await trusted.line("agent connected to")
        await roundtrip(await relay.port("public echo on"), 64 * 1024)
    # A plain HTTP proxy given as https://: said once per attempt, and retried.
    async with connect_proxy() as plain:
        wrong = ws_agent(
            ws_tunnel, url, "--service", f"echo={echo_addr}",
            "--proxy", plain.url().replace("http://", "https://"), name="wrong",
        )  # fmt: skip
        await wrong.wait_log("is it an https:// proxy (give --proxy http://")
        assert wrong.popen.poll() is None  # still trying: the proxy may come back right


def test_proxy_ca_needs_an_https_proxy(tmp_path: Path) -> None:
    _, _, ca = tls_files(tmp_path)
    base = [sys.executable, "-m", "mio.tunnel.cli", "agent", "--service", f"x={HOST}:1"]
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env["MIO_TUNNEL_SECRET"] = "s" * 32
    for extra in (
        ["--relay", f"ws://{HOST}:1/", "--proxy", f"http://{HOST}:2", "--proxy-ca", ca],
        ["--relay", f"ws://{HOST}:1/", "--proxy-ca", ca],
        ["--relay", f"{HOST}:1", "--proxy-ca", ca],
    ):
        done = subprocess.run(
            [*base, *extra], capture_output=True, text=True, timeout=30, env=env, check=False
        )
        assert done.returncode == cli.EXIT_USAGE, done.stderr
        assert "--proxy-ca needs an https:// proxy" in done.stderr
    missing = [*base, "--relay", f"wss://{HOST}:1/", "--proxy", f"https://{HOST}:2"]
    done = subprocess.run(
        [*missing, "--proxy-ca", str(tmp_path / "nope.pem")],
        capture_output=True, text=True, timeout=30, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == cli.EXIT_USAGE, done.stderr
    assert f"--proxy-ca {tmp_path / 'nope.pem'}: cannot read it" in done.stderr


@posix
@pytest.mark.timeout(40)
async def test_ws_proxy_from_the_environment_and_no_proxy(ws_tunnel: Tunnel) -> None:
    async with service(echo) as echo_addr, connect_proxy() as proxy:
        relay, url = await ws_relay(ws_tunnel, "--public", f"echo={HOST}:0")
        ws_tunnel.env["HTTP_PROXY"] = proxy.url()
        agent = ws_agent(ws_tunnel, url, "--service", f"echo={echo_addr}")
        assert (await agent.line("agent connected to")).endswith(f"via the proxy {proxy.url()}")
        assert len(proxy.requests) == 1
        await roundtrip(await relay.port("public echo on"), 512 * 1024)
        direct = ws_agent(ws_tunnel, url, "--service", f"echo={echo_addr}", "--no-proxy", name="d")
        assert (await direct.line("agent connected to")) == f"agent connected to {url}"
        ws_tunnel.env["NO_PROXY"] = "localhost,127.0.0.1"
        bypass = ws_agent(ws_tunnel, url, "--service", f"echo={echo_addr}", name="bypass")
        assert (await bypass.line("agent connected to")) == f"agent connected to {url}"
        assert len(proxy.requests) == 1  # neither went through the proxy


async def _retried(proc: Proc, text: str) -> None:
    """``proc`` logs ``text`` in its retry line at least twice and never connects."""
    await proc.wait_log("attempt 2)")
    lines = [line for line in proc.log.splitlines() if "cannot connect to the relay" in line]
    assert len(lines) >= 2
    assert all(text in line for line in lines), lines
    assert all(line.count("\n") == 0 for line in lines)
    assert not proc.lines()


@posix
@pytest.mark.timeout(40)
async def test_proxy_errors_name_the_culprit(ws_tunnel: Tunnel) -> None:
    relay, url = await ws_relay(ws_tunnel)
    ws_port = url.rsplit(":", 1)[1].split("/")[0]
    async with connect_proxy(("alice", "right")) as proxy, connect_proxy(deny=True) as deny:
        nocreds = ws_agent(ws_tunnel, url, "--service", "a=127.0.0.1:1", "--proxy", proxy.url())
        wrong = ws_agent(
            ws_tunnel, url, "--service", "a=127.0.0.1:1", "--proxy", proxy.url("alice:wrong"),
            name="wrong",
        )  # fmt: skip
        denied = ws_agent(ws_tunnel, url, "--service", "a=127.0.0.1:1", "--proxy", deny.url(),
                          name="denied")  # fmt: skip
        gone = ws_agent(
            ws_tunnel, url, "--service", "a=127.0.0.1:1", "--proxy", f"http://{HOST}:{free_port()}",
            name="gone",
        )  # fmt: skip
        base = f"the proxy {proxy.url()} refused the CONNECT to {HOST}:{ws_port} with HTTP 407"
        await _retried(nocreds, f"{base} Proxy Authentication Required: it wants credentials")
        await _retried(wrong, f"{base} Proxy Authentication Required: it did not accept")
        await _retried(denied, f"refused the CONNECT to {HOST}:{ws_port} with HTTP 403 Forbidden")
        await _retried(gone, "cannot reach the proxy http://127.0.0.1:")
        assert "wrong" not in wrong.log.replace("agent 'wrong'", "")  # no password in the log
        assert all(status in (403, 407) for _, status in proxy.requests + deny.requests)
    assert "authentication failed" not in relay.log  # never got that far


@posix
@pytest.mark.timeout(40)
async def test_relay_side_errors_name_the_culprit(ws_tunnel: Tunnel, tmp_path: Path) -> None:
    cert, key, ca = tls_files(tmp_path)
    relay, url = await ws_relay(ws_tunnel)
    base = url.rsplit("/", 1)[0]
    tcp = await relay.port("relay listening on")
    # A wrong path: 404, said on both sides.
    path = ws_agent(ws_tunnel, f"{base}/nope", "--service", "a=127.0.0.1:1", name="path")
    await _retried(
        path,
        "no WebSocket endpoint at /nope (HTTP 404: it says 'no mio tunnel at /nope: this "
        "relay serves /mio-tunnel'): give --relay the path",
    )
    await relay.wait_log("asked for '/nope', not --ws-path '/mio-tunnel'")
    # The relay's --listen port (raw mio) is not its WebSocket port.
    raw = ws_agent(ws_tunnel, f"ws://{HOST}:{tcp}/", "--service", "a=127.0.0.1:1", name="raw")
    await _retried(raw, "is not HTTP: is that the relay's --ws-listen port (not --listen)?")
    # wss:// to a plain WebSocket port.
    tls = ws_agent(
        ws_tunnel, "wss" + url[2:], "--service", "a=127.0.0.1:1", "--tls-ca", ca, name="tls"
    )
    await _retried(tls, "the relay does not speak TLS on that port")
    await relay.wait_log("speaks TLS (wss://) but this relay's WebSocket port is plain")
    # ws:// to a wss:// port: said in one line, not retried (like plain TCP on a TLS relay).
    secure, wss_url = await ws_relay(ws_tunnel, "--tls-cert", cert, "--tls-key", key, name="secure")
    plain = ws_agent(ws_tunnel, "ws" + wss_url[3:], "--service", "a=127.0.0.1:1", name="plain")
    assert await plain.wait() == cli.EXIT_USAGE
    assert TLS_REQUIRED_WS in plain.log
    assert "cannot connect" not in plain.log
    await secure.wait_log("speaks plain HTTP (ws://) but this relay's WebSocket port speaks TLS")
    # Configuration errors.
    for args, why in [
        (("--tls-ca", ca), "is plain WebSocket: use wss://"),
        (("--proxy", "http://127.0.0.1:1"), None),
    ]:
        bad = ws_tunnel.start("bad", "agent", "--relay", url, "--service", "a=127.0.0.1:1", *args)
        if why is None:
            await bad.wait_log("cannot reach the proxy")
            bad.kill()
            continue
        assert await bad.wait() == cli.EXIT_USAGE
        assert why in bad.log
    tcp_proxy = ws_tunnel.start(
        "tcp-proxy", "agent", "--relay", f"{HOST}:{tcp}", "--service", "a=127.0.0.1:1",
        "--proxy", "http://127.0.0.1:1",
    )  # fmt: skip
    assert await tcp_proxy.wait() == cli.EXIT_USAGE
    assert "--proxy needs a WebSocket relay" in tcp_proxy.log


@posix
@pytest.mark.timeout(30)
async def test_wrong_secret_over_ws_is_refused_like_over_tcp(
    ws_tunnel: Tunnel, tmp_path: Path
) -> None:
    secret_file = tmp_path / "wrong.secret"
    secret_file.write_text(WRONG_SECRET + "\n")
    secret_file.chmod(0o600)
    relay, url = await ws_relay(ws_tunnel, "--public", f"echo={HOST}:0")
    agent = ws_agent(
        ws_tunnel, url, "--service", "echo=127.0.0.1:1", "--secret-file", str(secret_file)
    )
    assert await agent.wait() == cli.EXIT_AUTH
    assert "authentication with the relay" in agent.log
    await relay.wait_log("authentication failed")
    assert WRONG_SECRET not in agent.log + relay.log
    assert not agent.lines()


@posix
@pytest.mark.timeout(40)
async def test_agent_over_ws_reconnects_after_the_relay_restarts(ws_tunnel: Tunnel) -> None:
    listen, ws_listen = free_port(), free_port()
    args = ("--listen", f"{HOST}:{listen}", "--ws-listen", f"{HOST}:{ws_listen}")
    async with service(echo) as echo_addr:
        public = free_port()
        first = ws_tunnel.start("relay1", "relay", *args, "--public", f"echo={HOST}:{public}")
        url = (await first.line("relay websocket on")).split()[-1]
        agent = ws_agent(ws_tunnel, url, "--service", f"echo={echo_addr}")
        await agent.line("agent connected to")
        await roundtrip(public, 64 * 1024)
        first.kill()  # no goodbye: the WebSocket just ends
        await agent.wait_log(f"lost the relay {url}")
        second = ws_tunnel.start("relay2", "relay", *args, "--public", f"echo={HOST}:{public}")
        await second.line("relay websocket on")
        await agent.line("agent connected to", count=2, timeout=15)
        await roundtrip(public, 64 * 1024)


# ============================================================================ relay admission
async def test_ws_listener_caps_pending_connections_before_tls(tmp_path: Path) -> None:
    """--ws-listen goes through the relay's admission: the pending caps hold (a connection
    over them is reset before any TLS or HTTP state exists), and one --auth-timeout covers
    TLS, the WebSocket upgrade and authentication."""
    import ssl

    from test_tunnel_hardening import assert_reset, eventually, running_relay

    cert, key, ca = tls_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with running_relay(
        ssl=context,
        ws_host=HOST,
        ws_port=0,
        auth_timeout=30,
        max_pending=4,
        max_pending_per_source=3,
    ) as relay:
        port = relay.ws_port()
        silent = [await asyncio.open_connection(HOST, port) for _ in range(3)]
        await eventually(lambda: relay.stats()["pending"] == 3)
        reader, writer = await asyncio.open_connection(HOST, port)
        await assert_reset(reader)  # the fourth of 127.0.0.1
        writer.close()
        assert relay.counts["refused_pending"] == 1
        for _, w in silent:
            w.close()
        await eventually(lambda: relay.stats()["pending"] == 0)
        assert not relay._peers

    client_ssl = ssl.create_default_context(cafile=ca)
    async with running_relay(ssl=context, ws_host=HOST, ws_port=0, auth_timeout=0.5) as relay:
        # Upgraded, then silent: dropped when the one deadline expires.
        connection = await ws_connect(
            f"wss://{HOST}:{relay.ws_port()}{DEFAULT_PATH}", ssl=client_ssl, proxy=None, **_WS
        )
        await eventually(lambda: relay.stats()["pending"] == 1)
        await asyncio.wait_for(connection.wait_closed(), 10)
        await eventually(lambda: relay.stats()["pending"] == 0)
        assert not relay._peers
