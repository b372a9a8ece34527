"""Scaling past one core: ``mio.serve(..., reuse_port=True)`` and ``mio echo --workers N``
(pre-forked workers on one SO_REUSEPORT port; each session lives in one worker)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

import mio

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT") or not hasattr(os, "fork"),
    reason="needs SO_REUSEPORT and fork (Linux/BSD)",
)


async def _echo(stream: mio.Stream) -> None:
    async for chunk in stream:
        await stream.send(chunk)


async def _roundtrip(port: int, payload: bytes) -> mio.Session:
    session = await mio.connect("127.0.0.1", port)
    stream = await session.open_stream()
    stream.write(payload)
    stream.write_eof()
    assert await stream.read() == payload
    return session


async def test_two_servers_share_a_port_with_reuse_port() -> None:
    first = await mio.serve(_echo, "127.0.0.1", 0, reuse_port=True)
    second = await mio.serve(_echo, "127.0.0.1", first.port, reuse_port=True)
    sessions = []
    try:
        assert second.port == first.port
        for i in range(64):  # the kernel hashes each connection to one of the two listeners
            sessions.append(await _roundtrip(first.port, b"x%d" % i))
        served = (first.stats["sessions"], second.stats["sessions"])
        assert sum(served) == 64
        assert min(served) > 0, served  # both listeners got connections (2**-63 to fail)
    finally:
        for session in sessions:
            session.close()
        first.close()
        second.close()
        await first.wait_closed()
        await second.wait_closed()


async def test_a_port_in_use_without_reuse_port_is_refused() -> None:
    first = await mio.serve(_echo, "127.0.0.1", 0, reuse_port=True)
    try:
        with pytest.raises(OSError, match="in use"):
            await mio.serve(_echo, "127.0.0.1", first.port)
    finally:
        first.close()
        await first.wait_closed()


def _start(*argv: str) -> tuple[subprocess.Popen[str], int, list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mio", "echo", "--listen", "127.0.0.1:0", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # one line once every worker listens
    m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+) \((\d+) workers, pids ([\d ]+)\)\n", line)
    if m is None:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError((line, err))
    pids = [int(p) for p in m.group(3).split()]
    assert len(pids) == int(m.group(2))
    return proc, int(m.group(1)), pids


@pytest.fixture
def two_workers() -> Iterator[tuple[subprocess.Popen[str], int, list[int]]]:
    proc, port, pids = _start("--workers", "2", "-v")
    try:
        yield proc, port, pids
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        for pid in pids:  # no worker outlives the parent
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def _served(err: str) -> dict[int, int]:
    """Sessions per worker, from each worker's ``stopped: N sessions`` log line."""
    return {
        int(m.group(1)): int(m.group(2))
        for m in re.finditer(r"\[worker (\d+)\]: stopped: (\d+) sessions", err)
    }


async def test_echo_workers_spread_sessions_and_stop_together(
    two_workers: tuple[subprocess.Popen[str], int, list[int]],
) -> None:
    proc, port, pids = two_workers
    assert len(pids) == 2
    assert proc.pid not in pids
    sessions = [await _roundtrip(port, os.urandom(100 + i)) for i in range(64)]
    # a stream still open when the stop comes finishes within --grace
    last = await sessions[0].open_stream()
    last.write(b"ping")
    assert await last.readexactly(4) == b"ping"
    proc.send_signal(signal.SIGTERM)
    last.write_eof()
    assert await last.read() == b""
    for session in sessions:
        await asyncio.wait_for(session.wait_closed(), 10)
    assert await asyncio.to_thread(proc.wait, 15) == 0
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "Traceback" not in err
    served = _served(err)
    assert sorted(served) == [0, 1], err
    assert sum(served.values()) == 64
    assert min(served.values()) > 0, served  # the kernel spread them (2**-63 to fail)


async def test_a_worker_that_dies_stops_the_others(
    two_workers: tuple[subprocess.Popen[str], int, list[int]],
) -> None:
    proc, _, pids = two_workers
    os.kill(pids[0], signal.SIGKILL)
    assert await asyncio.to_thread(proc.wait, 15) == 1
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "exited with code 137: stopping the others" in err
    assert "[worker 1]: stopped:" in err  # the survivor shut down cleanly


def test_workers_must_be_positive() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mio", "echo", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--workers must be at least 1" in proc.stderr


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped by whoever adopted it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


async def test_workers_stop_when_the_parent_is_killed() -> None:
    proc, port, pids = _start("--workers", "2", "--grace", "1")
    try:
        session = await _roundtrip(port, b"hello")
        proc.kill()  # SIGKILL: no chance to forward anything
        await asyncio.to_thread(proc.wait, 10)
        for _ in range(200):
            if not any(_alive(pid) for pid in pids):
                break
            await asyncio.sleep(0.05)
        assert not any(_alive(pid) for pid in pids), "workers outlived their parent"
        await asyncio.wait_for(session.wait_closed(), 10)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=10)
