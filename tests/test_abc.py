"""mio.abc: mio's sessions and streams satisfy the protocols, statically and at run time.

The static check runs ``mypy --strict`` on ``tests/typecheck_abc.py`` (skipped without
mypy, which the ``dev`` extra installs); a deliberately broken stream class checks that the
protocols have teeth.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import mio
import mio.abc

HERE = Path(__file__).resolve().parent

BROKEN = '''
import mio.abc

class NoReset:
    """Everything a stream has, except reset()."""

def check(stream: NoReset) -> mio.abc.Stream:
    return stream
'''


def _mypy(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install 'mio-mux[dev]')")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            *map(str, files),
        ],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_transports_satisfy_the_protocols_statically(tmp_path: Path) -> None:
    if importlib.util.find_spec("aioquic") is None:
        pytest.skip("aioquic is not installed: mio.quic cannot be type checked")
    proc = _mypy(tmp_path, HERE / "typecheck_abc.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_class_missing_a_method_is_rejected(tmp_path: Path) -> None:
    broken = tmp_path / "broken_stream.py"
    broken.write_text(BROKEN)
    proc = _mypy(tmp_path, broken)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'got "NoReset", expected "Stream"' in proc.stdout


async def test_runtime_checks() -> None:
    client, server = mio.pipe()
    try:
        assert isinstance(client, mio.abc.Session)
        stream = await client.open_stream()
        assert isinstance(stream, mio.abc.Stream)
        assert not isinstance(stream, mio.abc.Session)
        assert not isinstance(object(), mio.abc.Stream)
    finally:
        client.close()
        server.close()
        await client.wait_closed()
        await server.wait_closed()
