"""The documentation stays true: its examples run, its install commands name our package,
and the Sphinx build has no warnings.

* Every ```` ```python ```` block of README.md, docs/quickstart.md, docs/install.md and
  docs/guides/*.md runs: the blocks of one page, in order, form one program, run in a fresh
  interpreter against real loopback sockets. A block right after a ``% not run: why`` line
  (a MyST comment, invisible in the output) is a fragment and is skipped.
* Every ``pip install`` command in README.md and docs/ must install the distribution
  ``mio-mux``: the name ``mio`` on the package index is an unrelated project.
* The Sphinx build (the ``docs`` extra) is warning-free. Without Sphinx that test skips,
  unless ``MIO_REQUIRE_DOCS=1`` (set by the CI docs job) makes it fail instead.

Needs README.md and docs/ next to ``tests/`` (a checkout or the unpacked sdist).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from mio._version import DISTRIBUTION

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

if not DOCS.is_dir() or not README.is_file():  # pragma: no cover - tests copied elsewhere
    pytest.skip(f"no docs/ and README.md at {ROOT}", allow_module_level=True)

#: Guides that explain a command rather than Python code (no example to run).
NO_PYTHON = {"tunnel.md"}
#: Pages whose Python examples run.
EXAMPLE_PAGES = sorted(
    [README, DOCS / "quickstart.md", DOCS / "install.md"]
    + [p for p in (DOCS / "guides").glob("*.md") if p.name not in NO_PYTHON]
)

_BLOCK = re.compile(
    r"^(?P<skip>% not run[^\n]*\n)?```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S
)


def python_blocks(text: str) -> list[str]:
    """The runnable ```python blocks of a Markdown page, in order."""
    return [m.group("code") for m in _BLOCK.finditer(text) if not m.group("skip")]


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_every_guide_has_examples() -> None:
    guides = sorted((DOCS / "guides").glob("*.md"))
    names = {g.name for g in guides}
    expected = {"rpc.md", "streaming.md", "nat.md", "reference.md", "quic.md", "tuning.md"}
    assert expected | NO_PYTHON <= names
    for guide in guides:
        blocks = python_blocks(guide.read_text("utf-8"))
        if guide.name in NO_PYTHON:
            assert not blocks
        else:
            assert blocks, f"{guide.name} has no runnable Python example"
    # The extractor honours the skip marker and nothing else.
    sample = "```python\na = 1\n```\n% not run: fragment\n```python\nawait x\n```\n"
    assert python_blocks(sample) == ["a = 1\n"]


@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=_page_id)
def test_examples_run(page: Path, tmp_path: Path) -> None:
    blocks = python_blocks(page.read_text("utf-8"))
    assert blocks, f"{_page_id(page)} has no Python example"
    program = "\n\n".join(blocks)
    if "mio.quic" in program:
        for module in ("aioquic", "trustme"):
            if importlib.util.find_spec(module) is None:
                pytest.skip(f"{module} is not installed (in the test extra)")
    script = tmp_path / f"{page.stem}_examples.py"
    script.write_text(program, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-X", "tracemalloc=5", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"{_page_id(page)} examples failed:\n{proc.stderr}"
    # Warnings raised in __del__ (an unclosed socket or transport), tasks destroyed while
    # pending and never-retrieved exceptions do not change the exit code: catch them here.
    for sign in ("ResourceWarning", "Exception ignored", "Task was destroyed", "never retrieved"):
        assert sign not in proc.stderr, f"{_page_id(page)}: {sign}\n{proc.stderr}"


# -- install commands ------------------------------------------------------------------------

_INSTALL = re.compile(r"\b(?:pip3?|pipx|uv pip)\s+install\b(?P<args>[^`\n]*)")
#: pip options followed by a value that is not a requirement.
_VALUE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "-t"}


def install_targets(line: str) -> list[str]:
    """The requirement names (as written) that the ``pip install`` commands of ``line``
    install; paths, URLs, options and shell syntax are left out."""
    names = []
    for match in _INSTALL.finditer(line):
        args = re.split(r"&&|\|\||;|\||\s#", match.group("args"))[0]
        try:
            tokens = shlex.split(args)
        except ValueError:
            tokens = args.split()
        skip_next = False
        for token in tokens:
            if skip_next:
                skip_next = False
                continue
            if token in _VALUE_OPTIONS:
                skip_next = True
                continue
            if token.startswith(("-", ".", "/", "$", "~")) or "://" in token:
                continue
            try:
                names.append(Requirement(token).name)
            except InvalidRequirement:
                continue
    return names


def _doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md")), *sorted(DOCS.glob("*.rst"))]


def test_install_commands_name_the_distribution() -> None:
    seen = []
    wrong = []
    for path in _doc_files():
        if "_build" in path.parts:
            continue
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            for name in install_targets(line):
                seen.append(name)
                if canonicalize_name(name) == "mio":
                    wrong.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not wrong, "install commands naming the unrelated index name 'mio':\n" + "\n".join(wrong)
    assert seen.count(DISTRIBUTION) >= 5, seen  # the scan found the real commands


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ("python -m pip install mio-mux", ["mio-mux"]),
        ("pip install 'mio-mux[quic]'", ["mio-mux"]),
        ("`pip install 'mio[quic]'`, on aioquic", ["mio"]),
        ('pip install "mio>=0.1" && mio bench', ["mio"]),
        ("MIO_NO_EXTENSIONS=1 python -m pip install mio  # pure", ["mio"]),
        ("python -m pip install '.[test]' && python -m pytest", []),
        ("pip install -e '.[bench]'", []),
        ("pip install -r requirements.txt atheris", ["atheris"]),
        ("pipx install mio_mux", ["mio_mux"]),
    ],
)
def test_install_targets(line: str, names: list[str]) -> None:
    assert install_targets(line) == names


# -- the Sphinx build -----------------------------------------------------------------------


#: The build command of the CI docs job and .readthedocs.yaml, on a fresh environment (-E).
SPHINX_BUILD = [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html"]


def test_sphinx_build_is_warning_free(tmp_path: Path) -> None:
    missing = [m for m in ("sphinx", "furo", "myst_parser") if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("MIO_REQUIRE_DOCS") == "1":
            pytest.fail(f"MIO_REQUIRE_DOCS=1 but {missing} are not installed (the docs extra)")
        pytest.skip(f"{missing} not installed (pip install '.[docs]')")
    proc = subprocess.run(
        [*SPHINX_BUILD, str(DOCS), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr
    api = "".join(p.read_text("utf-8") for p in (tmp_path / "html" / "api").glob("*.html"))
    # The reference documents every public name of mio, mio.abc and mio.quic.
    import mio
    import mio.abc

    modules = {"mio": mio.__all__, "mio.abc": mio.abc.__all__}
    if importlib.util.find_spec("aioquic") is not None:
        import mio.quic

        modules["mio.quic"] = mio.quic.__all__
    for module, names in modules.items():
        for name in names:
            assert f'id="{module}.{name}"' in api, f"{module}.{name} missing from the API reference"
