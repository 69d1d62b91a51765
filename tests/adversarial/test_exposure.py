"""Exposure: what /api/pools shows and where, and what someone who reads it can do."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

from tests.adversarial.app_side import instrumented_app
from tests.adversarial.attack import Target, push, record, scrape, wait_for
from tests.unit.sidecar_payloads import encode, payload, pool


def _checkouts(target: Target) -> float:
    return target.value("sqlalchemy_pool_checkouts_total", app="victim", pool="db") or 0.0


def test_the_api_is_not_on_the_metrics_listener_and_an_impostor_cannot_stop_an_app(
    sidecar: Callable[..., Target],
) -> None:
    target = sidecar()
    assert scrape(target, "/api/pools")[0] == 404
    api = target.push_url.removesuffix("/v1/push") + "/api/pools"
    with instrumented_app(target.push_url, app="victim", push_interval="0.2"):
        wait_for(lambda: _checkouts(target) > 0, timeout=15)
        with urllib.request.urlopen(api, timeout=10) as response:
            assert b'"instance"' not in response.read()  # not without asking
        with urllib.request.urlopen(api + "?instances=1", timeout=10) as response:
            (process,) = json.loads(response.read())["processes"]
        # With the instance id read there, push a sequence number out of the app's reach.
        impostor = payload(
            process["instance"], seq=2**53, app="victim", pools={"db": pool(checkouts=1)}
        )
        status, _ = push(target.push_url, encode(impostor))
        assert status == 409
        before, refused_at = _checkouts(target), time.monotonic()
        wait_for(lambda: _checkouts(target) > before, timeout=5)
        resumed = time.monotonic() - refused_at
        assert target.value("pool_exporter_processes") == 1
    reason = target.value("pool_exporter_push_rejected_total", reason="identity_changed")
    assert reason == 1
    record(
        "impostor seq=2**53 with the app's instance id",
        f"409; app counted again after {resumed:.1f} s",
    )
