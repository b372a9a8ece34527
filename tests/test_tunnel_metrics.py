"""``--metrics``: Prometheus text metrics of the relay and the agent, scraped over a real
socket from real processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re

import pytest
from tunnel_util import (
    DIALER_OPTS,
    HOST,
    WRONG_SECRET,
    Tunnel,
    assert_closed,
    echo,
    posix,
    roundtrip,
    service,
)
from tunnel_util import tunnel as tunnel  # the fixture

from mio.tunnel import cli
from mio.tunnel.metrics import render

_SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


async def scrape(port: int, path: str = "/metrics") -> tuple[str, dict[str, float]]:
    """GET ``path``; the status line and ``{"name{labels}": value}``."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    response = (await asyncio.wait_for(reader.read(), 5)).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    samples: dict[str, float] = {}
    status = head.split("\r\n")[0]
    for line in body.splitlines() if status.endswith(" 200 OK") else ():
        if line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            assert m is not None, line
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return status, samples


def test_render_format() -> None:
    text = render(
        [
            ("a_total", "counter", "Some a.", {(): 3}),
            ("b", "gauge", "By name.", {(("name", 'x"y'),): 1.5}),
        ]
    )
    assert text == (
        "# HELP a_total Some a.\n# TYPE a_total counter\na_total 3\n"
        '# HELP b By name.\n# TYPE b gauge\nb{name="x\\"y"} 1.5\n'
    )


@posix
@pytest.mark.timeout(40)
async def test_relay_and_agent_metrics(tunnel: Tunnel) -> None:
    async with service(echo) as echo_addr:
        relay = await tunnel.relay(
            "relay", "--public", f"echo={HOST}:0", "--public", f"nobody={HOST}:0",
            "--metrics", "0",
        )  # fmt: skip
        line = await relay.line("metrics on http://")
        assert line.startswith(f"metrics on http://{HOST}:")  # loopback by default
        relay_metrics = int(line.rsplit(":", 1)[1].split("/")[0])
        agent = await tunnel.agent(relay, "--service", f"echo={echo_addr}", "--metrics", "0")
        agent_metrics = int((await agent.line("metrics on http://")).rsplit(":", 1)[1][:-8])

        port = await relay.port("public echo on")
        await roundtrip(port, 100_000)
        await roundtrip(port, 50_000)
        await assert_closed(await relay.port("public nobody on"))  # no agent: refused
        wrong = tunnel.start(
            "wrong", "agent", "--relay", f"{HOST}:{await relay.port('relay listening on')}",
            "--service", "x=127.0.0.1:1", *DIALER_OPTS, secret=WRONG_SECRET,
        )  # fmt: skip
        assert await wrong.wait() == cli.EXIT_AUTH

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:  # byte counts are added when a connection has ended
            status, m = await scrape(relay_metrics)
            if m["mio_tunnel_connections_active"] == 0 and m["mio_tunnel_auth_failures_total"]:
                break
            assert loop.time() < deadline, m
            await asyncio.sleep(0.05)
        assert status == "HTTP/1.1 200 OK"
        assert m["mio_tunnel_agents"] == 1
        assert m["mio_tunnel_services"] == 1
        assert m['mio_tunnel_service_agents{service="echo"}'] == 1
        assert m["mio_tunnel_connections_total"] == 2
        assert m['mio_tunnel_bytes_total{direction="in"}'] == 150_000
        assert m['mio_tunnel_bytes_total{direction="out"}'] == 150_000
        assert m["mio_tunnel_auth_failures_total"] == 1
        assert m['mio_tunnel_refused_total{reason="no_agent"}'] == 1
        assert m['mio_tunnel_refused_total{reason="source_limit"}'] == 0

        status, a = await scrape(agent_metrics)
        assert a["mio_tunnel_agent_connected"] == 1
        assert a["mio_tunnel_agent_links_total"] == 1
        assert a["mio_tunnel_connections_total"] == 2
        assert a['mio_tunnel_bytes_total{direction="in"}'] == 150_000
        assert (await scrape(agent_metrics, "/nothing"))[0] == "HTTP/1.1 404 Not Found"
