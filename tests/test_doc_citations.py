"""Every test a document cites exists: a renamed or removed test cannot leave a doc pointing
nowhere.

The documents are ``README.md`` and ``docs/*.md`` (``CHANGES.md`` is history: it names tests
as they were). A citation is any backticked span holding one of

* ``tests/<path>.py`` or ``tests/<dir>/``: the file or directory exists;
* ``tests/<path>.py::test_name``: that file defines ``test_name`` (``def`` or ``async def``
  at module level or in a class); ``test_name[params]`` and ``test_name*`` (a prefix) too;
* a bare ``test_name`` (``[params]``, ``*`` allowed): some module under ``tests/`` defines it.

Several citations may share one span (a comma-separated list). Names are read from the
sources with :mod:`ast`, so the check costs no collection.
"""

from __future__ import annotations

import ast
import functools
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

SPAN = re.compile(r"`([^`\n]+)`")
PATHED = re.compile(
    r"(?<![\w/])(tests/[\w/]+\.py)(?:::(test_\w+)(\*)?(\[[^\]\s]*\])?)?|(?<![\w/])(tests/[\w/]+/)"
)
BARE = re.compile(r"(?<![\w/.:])(test_\w+)(\*)?(\[[^\]\s]*\])?(?![\w/.])")


def citations(text: str) -> list[tuple[str | None, str | None, bool]]:
    """``(path, name, is_prefix)`` of every citation in ``text`` (see the module docstring);
    ``path`` is None for a bare name, ``name`` None for a file or directory."""
    found: list[tuple[str | None, str | None, bool]] = []
    for span in SPAN.findall(text):
        for m in PATHED.finditer(span):
            if m.group(5):
                found.append((m.group(5), None, False))
            else:
                found.append((m.group(1), m.group(2), bool(m.group(3))))
        rest = PATHED.sub(" ", span)
        for m in BARE.finditer(rest):
            found.append((None, m.group(1), bool(m.group(2))))
    return found


@functools.cache
def defined_tests(path: pathlib.Path) -> frozenset[str]:
    """Names of the test functions ``path`` defines (module level and in classes)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test_"
        ):
            names.add(node.name)
    return frozenset(names)


def all_tests() -> frozenset[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names |= defined_tests(path)
    return frozenset(names)


def missing(path: str | None, name: str | None, prefix: bool) -> str | None:
    """Why the citation points nowhere, or None when it exists."""
    if path is not None:
        target = ROOT / path
        if not target.exists():
            return f"{path} does not exist"
        if name is None:
            return None
        names = defined_tests(target)
    else:
        assert name is not None
        names = all_tests()
    if any(n.startswith(name) for n in names) if prefix else name in names:
        return None
    where = path or "tests/"
    return f"{where} defines no test {'starting with ' if prefix else ''}{name}"


def test_citation_formats_are_recognised() -> None:
    text = (
        "| a | b | `tests/test_x.py::test_one`, `tests/sub/test_y.py` |\n"
        "`test_two`, `test_three[quic]`, `test_four[*-eof]` and `tests/test_z.py::test_five*`\n"
        "`tests/conformance/` `pytest -m slow tests/test_fuzz.py` `test_six*`\n"
        "`mio.test_helper`, `some/test_file.py`, `not_test_seven` are not citations"
    )
    assert citations(text) == [
        ("tests/test_x.py", "test_one", False),
        ("tests/sub/test_y.py", None, False),
        (None, "test_two", False),
        (None, "test_three", False),
        (None, "test_four", False),
        ("tests/test_z.py", "test_five", True),
        ("tests/conformance/", None, False),
        ("tests/test_fuzz.py", None, False),
        (None, "test_six", True),
    ]


def test_missing_citations_are_reported() -> None:
    here = "tests/test_doc_citations.py"
    assert missing(here, "test_citation_formats_are_recognised", False) is None
    assert missing(None, "test_citation_formats", True) is None
    assert missing(here, "test_no_such_test", False) == f"{here} defines no test test_no_such_test"
    assert missing(None, "test_no_such_test", False) == "tests/ defines no test test_no_such_test"
    assert missing("tests/no_such_file.py", None, False) == "tests/no_such_file.py does not exist"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_cited_test_exists(doc: pathlib.Path) -> None:
    problems = sorted(
        {
            f"{doc.relative_to(ROOT)}: {why}"
            for cite in citations(doc.read_text(encoding="utf-8"))
            if (why := missing(*cite)) is not None
        }
    )
    assert not problems, "\n".join(problems)


def test_the_docs_cite_tests() -> None:
    # A floor, so that a citation format the patterns stopped matching cannot pass silently.
    cited = [c for doc in DOCS for c in citations(doc.read_text(encoding="utf-8")) if c[1]]
    assert len(cited) >= 80, len(cited)  # 97 when this test was written
