"""State that survives a restart of the sidecar: exact totals, refused files, the lock, the cap."""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from sqlalchemy_pool_exporter.sidecar.keeper import FILE, StateError, StateKeeper
from sqlalchemy_pool_exporter.sidecar.server import Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from sqlalchemy_pool_exporter.sidecar.state import FORMAT
from sqlalchemy_pool_exporter.sidecar.views import aggregated_items, per_process_items
from tests.unit.sidecar_ingest import Clock
from tests.unit.sidecar_payloads import encode, histogram, payload, pool


def sidecar(state: Path, clock: Clock | None = None, **settings: Any) -> Sidecar:
    """A sidecar on ``state`` that is never started: its keeper opened, pushes to ingest."""
    sc = Sidecar(SidecarSettings(state_dir=str(state), **settings), clock=clock or Clock())
    assert sc.keeper is not None
    sc.keeper.open()
    return sc


def crash(sc: Sidecar) -> None:
    """End ``sc`` the way ``kill -9`` does: no last save, the lock released by the kernel."""
    assert sc.keeper is not None
    sc.keeper.close(save=False)


def push(sc: Sidecar, *args: Any, **kwargs: Any) -> int:
    status, _ = sc.ingest(encode(payload(*args, **kwargs)))
    return status


def scrape(sc: Sidecar) -> None:
    generate_latest(sc.registry)


def shown(sc: Sidecar, pool_name: str = "db") -> tuple[int, int, int]:
    """Aggregated checkouts, wait count and live processes of (shop, ``pool_name``)."""
    items, counts = aggregated_items(sc.aggregator)
    item = dict(items)[("shop", pool_name)]
    live = {(a, p): n for a, p, n in counts}[("shop", pool_name)]
    return item["counters"]["checkouts"], item["histograms"]["wait_seconds"]["count"], live


def test_kill_9_after_a_scrape_keeps_what_it_showed_and_takes_processes_back_exactly(
    tmp_path: Path,
) -> None:
    sc = sidecar(tmp_path)
    push(sc, "a", pools={"db": pool(checkouts=5), "cache": pool(checkouts=1)})
    push(sc, "b", pid=2, pools={"db": pool(checkouts=3)})
    push(sc, "b", pid=2, seq=2, final=True, pools={"db": pool(checkouts=4)})
    push(sc, "c", pid=3, pools={"db": pool(checkouts=2)})
    scrape(sc)  # shows 11: saved before it was shown
    assert shown(sc) == (11, 11, 2)
    push(sc, "a", seq=2, pools={"db": pool(checkouts=7), "cache": pool(checkouts=1)})
    crash(sc)  # a's 7 was never saved (nor shown)

    again = sidecar(tmp_path)
    assert shown(again) == (11, 11, 0)  # what was shown; every process retired
    assert shown(again, "cache") == (1, 1, 0)
    # a pushes again: its cumulative 9 replaces its saved 5 (not 11 + 9); c died meanwhile
    assert push(again, "a", seq=3, pools={"db": pool(checkouts=9), "cache": pool(checkouts=1)})
    assert shown(again) == (15, 15, 1)
    assert push(again, "a", seq=3, pools={"db": pool(checkouts=10)}) == 409  # seq remembered
    crash(again)


def test_a_clean_stop_saves_everything(tmp_path: Path) -> None:
    sc = Sidecar(
        SidecarSettings(listen="127.0.0.1:0", push_listen="127.0.0.1:0", state_dir=str(tmp_path))
    )
    sc.start()
    push(sc, "a", pools={"db": pool(checkouts=5)})
    sc.stop()
    again = sidecar(tmp_path)
    assert shown(again) == (5, 5, 0)
    crash(again)


def test_background_saves_what_no_scrape_showed(tmp_path: Path) -> None:
    sc = Sidecar(SidecarSettings(state_dir=str(tmp_path)))
    sc.keeper = keeper = StateKeeper(tmp_path, sc.aggregator, every=0.05)
    keeper.open()
    push(sc, "a", final=True, pools={"db": pool(checkouts=4)})
    assert not (tmp_path / FILE).exists()  # no scrape, no save yet
    keeper.start()
    deadline = time.monotonic() + 10
    while keeper.saves == 0:
        assert time.monotonic() < deadline, "no background save"
        time.sleep(0.02)
    crash(sc)
    again = sidecar(tmp_path)
    assert shown(again) == (4, 4, 0)
    crash(again)


def test_per_process_series_come_back_frozen_and_keep_their_retention(tmp_path: Path) -> None:
    clock = Clock()
    sc = sidecar(tmp_path, clock, per_process=True, retired_retention=60)
    push(sc, "a", pid=1, interval=100, pools={"db": pool(checkouts=3, gauges={"checked_out": 1})})
    push(sc, "b", pid=2, final=True, pools={"db": pool(checkouts=4)})
    clock.now += 10  # b's series has been frozen for 10 s
    scrape(sc)
    crash(sc)

    def series(s: Sidecar) -> dict[str, tuple[int, dict[str, Any]]]:
        items, _ = per_process_items(s.aggregator)
        return {labels[2]: (i["counters"]["checkouts"], i["gauges"]) for labels, i in items}

    clock.now += 1000  # time the sidecar was down does not count
    again = sidecar(tmp_path, clock, per_process=True, retired_retention=60)
    assert series(again) == {"web-1/1": (3, {}), "web-1/2": (4, {})}
    clock.now += 50
    again.aggregator.expire()
    assert series(again) == {"web-1/1": (3, {})}  # b's 60 s are over, a's only begin
    push(again, "a", pid=1, seq=2, interval=100, pools={"db": pool(checkouts=5)})
    got = series(again)
    assert got["web-1/1"][0] == 5 and got["web-1/1"][1]["checked_out"] == 0
    crash(again)


def test_bucket_layouts_and_spent_histograms_survive_exactly(tmp_path: Path) -> None:
    other = [0.1, 1.0]
    b = {name: histogram([1, 0, 0], buckets=other) for name in ("wait_seconds", "use_seconds")}
    b["connect_seconds"] = histogram(buckets=other)
    sc = sidecar(tmp_path, per_process=True)
    push(sc, "a1", pools={"db": pool(checkouts=4)})
    push(sc, "b1", pid=2, pools={"db": pool(checkouts=1, hist=b)})
    push(sc, "b2", pid=3, pools={"db": pool(checkouts=1, hist=b)})
    push(sc, "a1", seq=2, pools={"db": pool(checkouts=6)})
    scrape(sc)

    def counts(s: Sidecar) -> list[Any]:
        """Counters and histograms of every aggregated and per-process item."""
        items = aggregated_items(s.aggregator)[0] + per_process_items(s.aggregator)[0]
        return [(labels, item["counters"], item["histograms"]) for labels, item in items]

    before = counts(sc)
    crash(sc)
    again = sidecar(tmp_path, per_process=True)
    assert counts(again) == before
    # B shown (2 of 3); when the B processes leave, A shows only what came after 4
    push(again, "a1", seq=3, pools={"db": pool(checkouts=6)})
    push(again, "b1", pid=2, seq=2, final=True, pools={"db": pool(checkouts=1, hist=b)})
    push(again, "b2", pid=3, seq=2, final=True, pools={"db": pool(checkouts=1, hist=b)})
    assert shown(again) == (8, 2, 1)
    crash(again)


def good_file(tmp_path: Path) -> bytes:
    sc = sidecar(tmp_path / "good")
    push(sc, "a", pools={"db": pool(checkouts=5)})
    scrape(sc)
    crash(sc)
    return (tmp_path / "good" / FILE).read_bytes()


def with_body(body: bytes, **header: Any) -> bytes:
    head = {"format": FORMAT, "version": 1, "saved_at": 1.0, "bytes": len(body)}
    head |= {"crc32": zlib.crc32(body)} | header
    return json.dumps(head).encode() + b"\n" + body + b"\n"


BAD: list[tuple[str, Any, str]] = [
    ("garbage", lambda good: b"\x00\xffnot json\n", "not a sidecar state file (no JSON header)"),
    ("foreign", lambda good: b'{"hello": 1}\n{}\n', "not a sidecar state file"),
    (
        "other version",
        lambda good: with_body(b"{}", version=2),
        "version 2 is not 1, the one this sidecar reads",
    ),
    ("truncated", lambda good: good[:-40], "truncated (length differs from its header)"),
    (
        "bit flip",
        lambda good: good[:-20] + bytes([good[-20] ^ 1]) + good[-19:],
        "corrupt (checksum mismatch)",
    ),
    ("wrong shape", lambda good: with_body(b'{"counters": 5}'), "wrong shape"),
    (
        "other histograms",
        lambda good: with_body(b'{"counters": [], "histograms": ["x"], "layouts": {}}'),
        "made for other histograms",
    ),
    ("too large", lambda good: b" " * (64 * 1024 * 1024 + 5000), "larger than 67108864 bytes"),
]


@pytest.mark.parametrize(("make", "reason"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_file_is_refused_in_one_line_moved_aside_and_the_start_is_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make: Any, reason: str
) -> None:
    bad = make(good_file(tmp_path))
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE).write_bytes(bad)
    caplog.set_level("INFO", logger="sqlalchemy_pool_exporter")
    sc = sidecar(state)
    (record,) = [r for r in caplog.records if r.name.startswith("sqlalchemy_pool_exporter")]
    (aside,) = state.glob(FILE + ".refused-*")
    assert record.levelname == "WARNING"
    shown_reason = repr(reason) if " " in reason else reason
    assert record.getMessage() == (
        f"saved state refused, starting fresh reason={shown_reason} moved_to={aside}"
    )
    assert aside.read_bytes() == bad  # kept for a human, never deleted
    assert sc.aggregator.groups == {} and sc.aggregator.tombstones == {}
    push(sc, "a", pools={"db": pool(checkouts=2)})
    scrape(sc)
    crash(sc)
    assert shown(sidecar(state)) == (2, 2, 0)  # and the fresh state is saved as usual


def test_a_second_sidecar_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = sidecar(tmp_path)
    with pytest.raises(StateError, match="is in use by another sidecar"):
        sidecar(tmp_path)
    crash(first)
    crash(sidecar(tmp_path))  # free again


def test_over_the_cap_the_oldest_retired_processes_are_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sc = Sidecar(SidecarSettings(state_dir=str(tmp_path)))
    sc.keeper = keeper = StateKeeper(tmp_path, sc.aggregator, max_bytes=4000)
    keeper.open()
    for i in range(30):  # each retired process is ~190 bytes in the file
        push(sc, f"r{i}", pid=i, final=True, pools={"db": pool(checkouts=1)})
    push(sc, "live", pid=99, pools={"db": pool(checkouts=5)})
    keeper.save()
    assert 0 < os.path.getsize(tmp_path / FILE) <= 4000
    assert any(r.getMessage().startswith("state cap reached") for r in caplog.records)
    crash(sc)
    again = sidecar(tmp_path)
    assert shown(again) == (35, 35, 0)  # the totals are whole
    kept = list(again.aggregator.tombstones)
    assert kept[-1] == "live" and "r29" in kept and "r0" not in kept  # newest kept
    crash(again)


def test_a_state_over_the_cap_is_not_saved_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sc = Sidecar(SidecarSettings(state_dir=str(tmp_path)))
    sc.keeper = keeper = StateKeeper(tmp_path, sc.aggregator, max_bytes=600)
    keeper.open()
    push(sc, "live", pools={"db": pool(checkouts=5)})
    keeper.save()
    assert not (tmp_path / FILE).exists()
    (message,) = [r.getMessage() for r in caplog.records if "not saved" in r.getMessage()]
    assert message.startswith("state not saved error='state of ")
    assert "bytes is over the 600 byte cap'" in message
    crash(sc)


def test_a_sidecar_started_again_in_process_keeps_what_it_holds(tmp_path: Path) -> None:
    settings = SidecarSettings(
        listen="127.0.0.1:0", push_listen="127.0.0.1:0", state_dir=str(tmp_path)
    )
    sc = Sidecar(settings).start()
    push(sc, "a", pools={"db": pool(checkouts=5)})
    sc.stop()
    sc.start()
    push(sc, "a", seq=2, pools={"db": pool(checkouts=6)})
    assert shown(sc) == (6, 6, 1)
    sc.stop()


def test_a_dropped_group_leaves_the_saved_state_with_its_frozen_series(tmp_path: Path) -> None:
    clock = Clock()
    sc = sidecar(tmp_path, clock, per_process=True, retired_retention=900, group_retention=60)
    push(sc, "a", pid=1, final=True, pools={"db": pool(checkouts=3), "old": pool(checkouts=2)})
    push(sc, "b", pid=2, interval=100, pools={"db": pool(checkouts=4)})
    scrape(sc)
    clock.now += 61  # "old" has had no live process for longer than group_retention
    sc.aggregator.expire()
    assert sorted(sc.aggregator.groups) == [("shop", "db")]
    assert sorted(sc.aggregator.frozen) == [("shop", "db", "web-1/1")]
    assert sorted(sc.aggregator.tombstones["a"].pools) == ["db"]
    scrape(sc)
    crash(sc)

    again = sidecar(tmp_path, clock, per_process=True, retired_retention=900, group_retention=60)
    items, _ = per_process_items(again.aggregator)
    assert sorted(labels for labels, _ in items) == [
        ("shop", "db", "web-1/1"),
        ("shop", "db", "web-1/2"),
    ]
    assert sorted(again.aggregator.groups) == [("shop", "db")]
    assert sorted(again.aggregator.tombstones["a"].pools) == ["db"]
    crash(again)


def test_the_process_key_survives_a_restart(tmp_path: Path) -> None:
    sc = sidecar(tmp_path)
    assert push(sc, "a", key="k" * 32, pools={"db": pool(checkouts=5)}) == 200
    scrape(sc)
    crash(sc)
    again = sidecar(tmp_path)
    # An impostor with the instance id but not its key is refused; the process is taken back.
    assert push(again, "a", seq=9, key="x" * 32, pools={"db": pool(checkouts=1)}) == 409
    assert push(again, "a", seq=2, key="k" * 32, pools={"db": pool(checkouts=6)}) == 200
    assert shown(again) == (6, 6, 1)
    crash(again)
