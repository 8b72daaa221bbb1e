"""Shared fixtures for the gregor Python client compatibility suite.

`gregor` starts a fresh broker (``gregor dev --brokers 1``) on a free port with its own
temporary data directory, once per test module, and stops it with SIGTERM afterwards
(failing the module's teardown if it does not exit cleanly). GREGOR_BIN selects the binary
(default: <repo>/target/release/gregor).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
GREGOR_BIN = Path(os.environ.get("GREGOR_BIN", REPO / "target" / "release" / "gregor"))

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 15


@dataclass
class Gregor:
    bootstrap: str
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gregor(env_overrides: dict[str, str] | None = None) -> Gregor:
    if not GREGOR_BIN.is_file() or not os.access(GREGOR_BIN, os.X_OK):
        pytest.fail(f"gregor binary not found at {GREGOR_BIN} (cargo build --release)")
    tmp = Path(tempfile.mkdtemp(prefix="gregor-pycompat-"))
    data_dir = tmp / "data"
    log_path = tmp / "gregor.log"
    env = dict(os.environ)
    env.update(env_overrides or {})
    env.setdefault("RUST_LOG", "info")
    last_err = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port = _free_port()
        log = open(log_path, "wb")
        proc = subprocess.Popen(
            [str(GREGOR_BIN), "dev", "--brokers", "1", "--data-dir", str(data_dir),
             "--port", str(port)],
            stdout=subprocess.PIPE, stderr=log, env=env,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        bootstrap = None
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            chunk = proc.stdout.read()
            if chunk:
                buf += chunk
                m = re.search(rb"bootstrap\.servers=(\S+)", buf)
                if m:
                    bootstrap = m.group(1).decode()
                    break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        if bootstrap:
            return Gregor(bootstrap, port, tmp, log_path, proc)
        proc.kill()
        proc.wait()
        last_err = (buf.decode(errors="replace") + "\n" +
                    log_path.read_text(errors="replace"))[-3000:]
    shutil.rmtree(tmp, ignore_errors=True)
    pytest.fail(f"gregor did not start within {START_TIMEOUT_S}s:\n{last_err}")


def stop_gregor(g: Gregor) -> int | None:
    """SIGTERM, wait; returns the exit code (None if it had to be killed)."""
    rc = None
    if g.proc.poll() is None:
        g.proc.send_signal(signal.SIGTERM)
        try:
            rc = g.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            g.proc.kill()
            g.proc.wait()
            rc = None
    else:
        rc = g.proc.returncode
    if g.proc.stdout:
        g.proc.stdout.close()
    return rc


@pytest.fixture(scope="module")
def gregor():
    g = start_gregor()
    yield g
    crashed_early = g.proc.poll() is not None
    rc = stop_gregor(g)
    tail = g.log_tail()
    if os.environ.get("KEEP_WORK") != "1":
        shutil.rmtree(g.data_dir, ignore_errors=True)
    assert not crashed_early, f"gregor exited during the tests (rc={rc}):\n{tail}"
    assert rc == 0, f"gregor did not stop cleanly on SIGTERM (rc={rc}):\n{tail}"


def create_topic(g, name: str, partitions: int = 1, timeout_s: int = 30) -> None:
    """Creates a topic of one replica through kafka-python's admin client."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    a = KafkaAdminClient(bootstrap_servers=g.bootstrap, request_timeout_ms=timeout_s * 1000)
    try:
        a.create_topics([NewTopic(name, partitions, 1)], timeout_ms=timeout_s * 1000)
    finally:
        a.close()


@pytest.fixture
def topic_name(request):
    """A fresh topic name per test (the broker is shared by a module's tests)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"
