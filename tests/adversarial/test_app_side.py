"""The app side: a sidecar that trickles its answers, or answers with 500 MB."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack

from tests.adversarial.app_side import (
    app_rss_mb,
    flood,
    instrumented_app,
    misbehaving_peer,
    trickle,
)
from tests.adversarial.attack import Target, record, wait_for


def test_a_trickling_sidecar_is_given_up_on_and_pushing_resumes(
    sidecar: Callable[..., Target],
) -> None:
    with ExitStack() as trickler:
        port, _ = trickler.enter_context(misbehaving_peer(trickle))
        url = f"http://127.0.0.1:{port}/v1/push"
        with instrumented_app(url, app="patient", push_interval="0.5", push_timeout="1") as app:
            started = time.monotonic()
            assert app.stderr is not None
            line = app.stderr.readline()
            logged = time.monotonic() - started
            assert line == (
                "push to sidecar failed; will retry each interval "
                f"url={url} error='no complete answer within 1 s; abandoned'\n"
            )
            assert logged <= 2.0, logged  # twice the push timeout
            # The trickler goes away and a healthy sidecar takes its port.
            trickler.close()
            target = sidecar("--push-listen", f"127.0.0.1:{port}")
            began = time.monotonic()
            wait_for(
                lambda: target.value("sqlalchemy_pool_processes", app="patient", pool="db") == 1,
                timeout=5,
            )
            recovered = time.monotonic() - began
            assert app.stderr.readline() == f"push to sidecar recovered url={url}\n"
    record("trickling sidecar: failure logged after", f"{logged:.1f} s (push timeout 1 s)")
    record("healthy sidecar on the same port: counted again after", f"{recovered:.1f} s")


def test_a_huge_answer_costs_the_app_almost_nothing() -> None:
    with misbehaving_peer(flood) as (port, served):
        url = f"http://127.0.0.1:{port}/v1/push"
        with instrumented_app(url, app="thrifty", push_interval="0.3") as app:
            wait_for(lambda: served[0] >= 1, timeout=10)
            before = app_rss_mb(app)
            wait_for(lambda: served[0] >= 5, timeout=10)
            grown = app_rss_mb(app) - before
    assert grown <= 5.0, grown
    record("500 MB answers to 4 pushes: app RSS grew by", f"{grown:.1f} MB")
