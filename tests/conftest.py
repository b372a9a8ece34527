"""Shared fixtures.

* ``impl``: the codec/window implementation under test, compiled and pure-Python (the
  compiled one carries the ``c_extension`` marker; ``--no-c-extensions`` deselects it).
  Test bodies never branch on the implementation.
* Coroutine tests (``async def test_...``) run in a fresh event loop with a hard timeout;
  a test that requests the ``loop_kind`` fixture runs on the default loop and on uvloop.
* A coroutine test fails when it leaves a task pending (a leak, in mio or in the test);
  ``@pytest.mark.allow_leaked_tasks(reason=...)`` opts a test out and says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import ssl
import types
from typing import Any

import pytest

ASYNC_TEST_TIMEOUT = 60.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--c-extensions",
        action="store_true",
        default=True,
        dest="c_extensions",
        help="run the tests of the compiled modules (default)",
    )
    parser.addoption(
        "--no-c-extensions",
        action="store_false",
        dest="c_extensions",
        help="skip the tests of the compiled modules (for a pure-Python install)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("c_extensions"):
        return
    skip = pytest.mark.skip(reason="--no-c-extensions given")
    for item in items:
        if "c_extension" in item.keywords:
            item.add_marker(skip)


@dataclasses.dataclass(frozen=True)
class Impl:
    """One implementation of the codec and the window accounting."""

    name: str
    frame: types.ModuleType
    window: types.ModuleType
    compiled: bool


def _load(compiled: bool) -> Impl:
    if compiled:
        frame = importlib.import_module("mio._frame")
        window = importlib.import_module("mio._window")
        return Impl("c", frame, window, True)
    frame = importlib.import_module("mio._frame_py")
    window = importlib.import_module("mio._window_py")
    return Impl("python", frame, window, False)


@pytest.fixture(
    scope="session",
    params=[
        pytest.param(True, id="c", marks=pytest.mark.c_extension),
        pytest.param(False, id="py"),
    ],
)
def impl(request: pytest.FixtureRequest) -> Impl:
    """The implementation under test (compiled and pure)."""
    return _load(request.param)


@pytest.fixture(scope="session")
def both_impls(request: pytest.FixtureRequest) -> list[Impl]:
    """Every available implementation, for differential tests."""
    impls = [_load(False)]
    if request.config.getoption("c_extensions"):
        impls.insert(0, _load(True))
    return impls


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    """Run a coroutine test on the default asyncio loop and on uvloop."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


def _loop_factory(kind: str) -> Any:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    kind = pyfuncitem.funcargs.get("loop_kind", "asyncio")
    timeout = ASYNC_TEST_TIMEOUT
    marker = pyfuncitem.get_closest_marker("timeout")
    if marker is not None:
        timeout = float(marker.args[0])

    async def run() -> None:
        await asyncio.wait_for(func(**kwargs), timeout)

    allow_leaks = pyfuncitem.get_closest_marker("allow_leaked_tasks") is not None
    loop = _loop_factory(kind)()
    leaked: list[asyncio.Task[Any]] = []
    try:
        loop.run_until_complete(run())
        leaked = loop.run_until_complete(_leftover_tasks())
    finally:
        _cancel(loop, leaked or [t for t in asyncio.all_tasks(loop) if not t.done()])
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    if leaked and not allow_leaks:
        pytest.fail(
            f"{len(leaked)} task(s) still pending after the test returned "
            f"(mark the test allow_leaked_tasks(reason=...) if that is intended): "
            + "; ".join(_describe(t) for t in leaked[:5]),
            pytrace=False,
        )
    return True


LEAK_SETTLE_TICKS = 20


async def _leftover_tasks() -> list[asyncio.Task[Any]]:
    """Tasks still pending after the test body returned and the loop ran a few more ticks.

    The ticks let a task that was already told to finish (a cancelled handler, a reader
    whose transport just closed) run its last step; a task still pending after them waits
    on something the test never ends: a leak.
    """
    me = asyncio.current_task()
    for _ in range(LEAK_SETTLE_TICKS):
        pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if not pending:
            return []
        await asyncio.sleep(0)
    return pending


def _describe(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    return f"{task.get_name()} ({name})"


def _cancel(loop: asyncio.AbstractEventLoop, pending: list[asyncio.Task[Any]]) -> None:
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


@pytest.fixture(scope="session")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) with a throwaway CA (trustme) and a certificate
    for 127.0.0.1 and localhost; only the tests that take it need trustme."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx
