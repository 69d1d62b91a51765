"""The app side of push mode: fork safety and a quick exit when the sidecar hangs."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import registry as instrumented
from sqlalchemy_pool_exporter.instrumentation.push import Pusher
from sqlalchemy_pool_exporter.instrumentation.runtime import identity
from tests.conftest import wait_for


def test_fork_while_another_thread_holds_the_registry_lock() -> None:
    engine = create_engine("sqlite://")
    sqlalchemy_pool_exporter.instrument(engine, name="forked", registry=None)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        stop = threading.Event()

        def hammer() -> None:  # what the pusher and monitor threads do, made constant
            while not stop.is_set():
                with instrumented.lock:
                    time.sleep(0.0005)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            for _ in range(20):
                pid = os.fork()
                if pid == 0:  # child: must not inherit a lock held by a thread it lacks
                    signal.alarm(5)
                    try:
                        (inst,) = [i for i in instrumented.instrumentations() if i.engine is engine]
                        os._exit(0 if inst.stats.checkouts == 0 else 3)
                    except BaseException:
                        os._exit(4)
                deadline = time.monotonic() + 10
                while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
                    if time.monotonic() > deadline:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        raise AssertionError("forked child deadlocked")
                    time.sleep(0.01)
                assert os.waitstatus_to_exitcode(done[1]) == 0
        finally:
            stop.set()
            thread.join()
    finally:
        sqlalchemy_pool_exporter.uninstrument(engine)
        engine.dispose()


def test_stop_does_not_hold_up_exit_when_the_sidecar_hangs() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # accepts, never answers
        server.settimeout(10)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/v1/push"
        pusher = Pusher(url=url, interval=60, timeout=2.0, token=None, identity=identity)
        pusher.start()
        first, _ = server.accept()  # the first push is now waiting for an answer
        with first:
            start = time.monotonic()
            pusher.stop(final=True, timeout=0.3)
            assert time.monotonic() - start < 0.8
            # stop() gave up waiting for the stuck push and sent no final one.
            assert pusher.alive() and pusher.seq == 1
            wait_for(lambda: not pusher.alive(), timeout=10)  # its own timeout ends it
        assert (pusher.sent, pusher.failed, pusher.seq) == (0, 1, 1)
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # no second connection: no final push
