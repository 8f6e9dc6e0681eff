"""Fixtures of the pipeline tests: a fresh pipeline context per test, an SMTP sink."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.pipeline.helpers import Sink, free_port
from ums.pipeline.app import reset


@pytest.fixture(autouse=True)
def _reset_pipeline() -> Iterator[None]:
    yield
    reset()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink(free_port()).start()
    try:
        yield s
    finally:
        s.stop()
