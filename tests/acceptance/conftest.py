"""Fixtures for the acceptance tests: real peers on loopback against ``ums serve``.

What it does
------------
``start_ums(**config)`` starts the server with a generated configuration and
stops it after the test; ``kamailio`` starts a registrar/proxy; ``run_dir`` is
the test's directory for configs, logs and traces.  A test that fails prints
the tails of the server's and the peers' logs.  A missing peer program fails the test
(``UMS_ALLOW_MISSING_PEERS=1`` makes it a skip).

How it works
------------
Everything started goes through :mod:`tests.peers`, which reaps processes and
bounds every wait; a hook at the end of the run stops anything still running.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.kamailio import Kamailio
from tests.peers.procs import running, stop_all, tail
from tests.peers.ums import UmsConfig, UmsServer


def require(*programs: str) -> None:
    """Fail (or, with UMS_ALLOW_MISSING_PEERS=1, skip) when a peer program is missing.

    ``make test`` installs every peer first, so a missing one is a broken setup, not a reason
    to pass quietly.
    """
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        message = f"not installed: {', '.join(missing)} (see scripts/install-peers.sh)"
        if os.environ.get("UMS_ALLOW_MISSING_PEERS") == "1":
            pytest.skip(message)
        pytest.fail(message)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + rep.when, rep)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all(timeout=3.0)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def dump_logs_on_failure(request: pytest.FixtureRequest, run_dir: Path) -> Iterator[None]:
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for path in sorted(run_dir.rglob("*")):
            if path.is_file() and path.suffix in (".err", ".out", ".log") and path.stat().st_size:
                print(f"===== {path.relative_to(run_dir)} =====\n{tail(path, 60)}")


@pytest.fixture
def start_ums(run_dir: Path, dump_logs_on_failure: None) -> Iterator[Callable[..., UmsServer]]:
    """Factory: ``start_ums(ring_delay=2.5, accounts=[...])`` -> a started :class:`UmsServer`."""
    started: list[UmsServer] = []

    def factory(**kwargs: Any) -> UmsServer:
        name = f"ums{len(started) + 1}" if started else "ums"
        cfg = UmsConfig(data_dir=run_dir / name / "data", **kwargs)
        server = UmsServer(run_dir / name, cfg)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def kamailio(run_dir: Path, dump_logs_on_failure: None) -> Iterator[Kamailio]:
    require("kamailio")
    kam = Kamailio(run_dir).start()
    yield kam
    kam.stop()


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    yield
    leftovers = [p for p in running() if not p.module_scoped]
    for p in leftovers:
        p.stop(3.0)
