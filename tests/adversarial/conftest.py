"""The adversarial suite: each attack of the reliability issue against a real sidecar.

Everything runs on loopback against ``sqlalchemy-pool-exporter serve`` subprocesses
(and, for the app side, a real instrumented app). Each test reproduces one attack and
asserts the bound that must hold; the figures measured along the way are printed at the
end of the run (they are what the README's "Reliability" section quotes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.adversarial.attack import FIGURES, Target, raise_own_fd_limit, start


@pytest.fixture
def sidecar() -> Iterator[Callable[..., Target]]:
    """Start ``serve`` subprocesses (see :func:`~tests.adversarial.attack.start`)."""
    raise_own_fd_limit()
    running: list[Target] = []

    def make(*flags: str, **kwargs: Any) -> Target:
        target = start(*flags, **kwargs)
        running.append(target)
        return target

    yield make
    for target in running:
        target.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the suite measured."""
    if FIGURES:
        terminalreporter.section("adversarial figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
