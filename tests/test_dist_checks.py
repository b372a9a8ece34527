"""The auditwheel check of .github/scripts/check_dists.py judges reports correctly.

The reports are ``auditwheel show --json`` output (auditwheel 6.8) for a mio-mux wheel
built on the development machine; the script runs auditwheel itself in the wheels workflow.
The sdist does not ship ``.github/``, so outside a checkout this module skips.
"""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".github" / "scripts" / "check_dists.py"

GOOD = "mio_mux-0.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
MEMBERS = ["mio/__init__.py", "mio/_frame.cpython-311-x86_64-linux-gnu.so"]


def _report(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "version": 1,
        "wheel": GOOD,
        "pure": False,
        "overall_tag": "manylinux_2_17_x86_64",
        "sym_tag": "manylinux_2_17_x86_64",
        "versioned_symbols": {"libc.so.6": ["GLIBC_2.14", "GLIBC_2.2.5"]},
        "external_libs": {},
        "policy_upgrades": {},
    }
    report.update(changes)
    return report


@pytest.fixture(scope="module")
def check_dists() -> types.ModuleType:
    if not SCRIPT.is_file():
        pytest.skip("no .github/scripts/check_dists.py (an sdist does not ship .github/)")
    spec = importlib.util.spec_from_file_location("check_dists", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_clean_manylinux_wheel_passes(check_dists: types.ModuleType) -> None:
    assert check_dists.audit_problems(GOOD, _report(), MEMBERS) == []
    musl = "mio_mux-0.1.0-cp311-cp311-musllinux_1_2_aarch64.whl"
    assert check_dists.audit_problems(musl, _report(overall_tag="musllinux_1_2_aarch64"), []) == []


def test_a_plain_linux_tag_fails(check_dists: types.ModuleType) -> None:
    wheel = "mio_mux-0.1.0-cp311-cp311-linux_x86_64.whl"
    (problem,) = check_dists.audit_problems(wheel, _report(), MEMBERS)
    assert "'linux_x86_64' is not manylinux or musllinux" in problem


def test_a_tag_older_than_the_symbols_fails(check_dists: types.ModuleType) -> None:
    wheel = "mio_mux-0.1.0-cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64.whl"
    problems = check_dists.audit_problems(wheel, _report(), MEMBERS)
    assert len(problems) == 2
    assert all("but needs manylinux_2_17_x86_64" in p for p in problems)
    # A newer tag than needed is fine; another family is not.
    newer = "mio_mux-0.1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert check_dists.audit_problems(newer, _report(), MEMBERS) == []
    musl = "mio_mux-0.1.0-cp311-cp311-musllinux_1_2_x86_64.whl"
    assert check_dists.audit_problems(musl, _report(), MEMBERS)


def test_external_or_vendored_libraries_fail(check_dists: types.ModuleType) -> None:
    external = _report(external_libs={"libssl.so.3": "/usr/lib/libssl.so.3"})
    (problem,) = check_dists.audit_problems(GOOD, external, MEMBERS)
    assert "external shared libraries ['libssl.so.3']" in problem
    vendored = [*MEMBERS, "mio_mux.libs/libz-1234.so.1"]
    (problem,) = check_dists.audit_problems(GOOD, _report(), vendored)
    assert "vendors shared libraries in ['mio_mux.libs']" in problem


def test_no_policy_or_pure_fails(check_dists: types.ModuleType) -> None:
    problems = check_dists.audit_problems(GOOD, _report(overall_tag="linux_x86_64"), MEMBERS)
    assert any("consistent with no manylinux/musllinux policy" in p for p in problems)
    (problem,) = check_dists.audit_problems(GOOD, _report(pure=True), MEMBERS)
    assert "no compiled module" in problem


def test_parse_platform_tag(check_dists: types.ModuleType) -> None:
    parse = check_dists.parse_platform_tag
    assert parse("manylinux2014_aarch64") == ("manylinux", (2, 17), "aarch64")
    assert parse("manylinux_2_28_x86_64") == ("manylinux", (2, 28), "x86_64")
    assert parse("musllinux_1_2_x86_64") == ("musllinux", (1, 2), "x86_64")
    assert parse("win_amd64") is None
