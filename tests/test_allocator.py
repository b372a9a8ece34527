"""mio's long-running commands keep glibc's heap from being trimmed and refaulted per buffer.

Without the tuning (mio._allocator) a TLS relay took 200-380 minor page faults per MB it
tunneled (each buffer freed at the top of the heap gave its pages back to the kernel, and
the next one faulted them in again); with it, about one per MB.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from tunnel_util import HOST, Tunnel, posix, service, tls_files
from tunnel_util import tunnel as tunnel  # the fixture

glibc_linux = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/stat"),
    reason="glibc's mallopt and /proc/PID/stat",
)

_PROBE = "from mio._allocator import tune_allocator; print(tune_allocator())"


def _tune_in_child(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@glibc_linux
def test_tune_allocator_applies_on_glibc_unless_the_user_chose() -> None:
    assert _tune_in_child() == "True"
    assert _tune_in_child(MALLOC_TOP_PAD_="65536") == "False"
    assert _tune_in_child(MALLOC_ARENA_MAX="2") == "False"
    assert _tune_in_child(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1") == "False"


def _minor_faults(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])  # field 10 of proc(5), counted after the command name


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    total = 0
    while chunk := await reader.read(256 * 1024):
        total += len(chunk)
    writer.write(b"%d" % total)
    await writer.drain()


async def _push(port: int, size: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    block = os.urandom(256 * 1024)
    for _ in range(size // len(block)):
        writer.write(block)
        await writer.drain()
    writer.write_eof()
    assert int(await reader.read()) == size
    writer.close()


@posix
@glibc_linux
@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_a_tls_relay_does_not_fault_its_heap_in_per_megabyte(
    tunnel: Tunnel, tmp_path: Path, loop: str
) -> None:
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        pytest.skip("uvloop is not installed")
    # The relay's own tuning is measured: an inherited malloc setting (MALLOC_ARENA_MAX=2
    # in many container images) would make it step aside and the test fail.
    inherited = tunnel.env.items()
    tunnel.env = {k: v for k, v in inherited if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    cert, key, ca = tls_files(tmp_path)
    async with service(_sink) as sink_addr:
        relay = await tunnel.relay(
            "relay", "--public", f"sink={HOST}:0", "--tls-cert", cert, "--tls-key", key,
            "--loop", loop,
        )  # fmt: skip
        await tunnel.agent(
            relay, "--service", f"sink={sink_addr}", "--loop", loop, tls_args=("--tls-ca", ca)
        )
        port = await relay.port("public sink on")
        await _push(port, 8 * 1024 * 1024)  # warm up: heap and buffers at their working size
        mib = 64
        before = _minor_faults(relay.popen.pid)
        await _push(port, mib * 1024 * 1024)
        per_mib = (_minor_faults(relay.popen.pid) - before) / mib
    # Untuned: 200-380 per MB (64 KiB-300 KiB buffers, every page faulted in anew).
    assert per_mib < 25, f"{per_mib:.1f} minor page faults per MiB tunneled"
