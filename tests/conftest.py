"""Shared test fixtures: one real local Ray cluster per test session, stopped at the end.

The cluster is started with ``ray start --head`` on 127.0.0.1 (free ports, its
own temp folder), so the same cluster serves ``ray.init`` users, ``ray job
submit`` tests and Serve tests. Token auth is switched off (see the team notes), and
weight downloads are forbidden (``COLORRAY_OFFLINE=1``): tests run offline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Ray Train's controller polls its workers every 2 s by default, which a test's few-second runs wait on at
# start-up, at every restart and at the end: polling every 0.25 s took 10-17 s off each training test.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
os.environ["COLORRAY_OFFLINE"] = "1"  # tests never download weights (tests/test_weights.py serves its own)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayCluster:
    def __init__(self, root: Path):
        self.root = root
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        # RAY_ADDRESS in the cluster's own environment: Ray Train's placement-group cleaner looks the
        # cluster up by it and fails ("multiple active Ray instances") when another Ray runs here.
        self.env = dict(os.environ, RAY_TMPDIR=str(root / "tmp"), RAY_ADDRESS=self.address)

    def start(self) -> None:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in (
            "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
            "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port",
        )}
        command = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
            "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}",
            "--num-cpus=4", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            "--disable-usage-stats", f"--temp-dir={self.root / 'tmp'}",
            *(f"--{name}={port}" for name, port in ports.items()),
        ]
        subprocess.run(command, check=True, env=self.env, capture_output=True, timeout=120)

    def stop(self) -> None:
        """Stop this cluster's processes only (`ray stop` would end every Ray on the machine)."""
        marks = (str(self.root), f":{self.gcs_port}")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self._pids(marks):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)

    @staticmethod
    def _pids(marks: tuple[str, ...]) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(mark in cmdline for mark in marks):
                pids.append(int(entry.name))
        return pids


def pytest_configure(config):
    """One torch thread in the test process: the tensors are tiny, and spinning threads only contend for cores."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_cluster():
    """A running Ray head on 127.0.0.1 with this process connected to it."""
    import ray

    root = Path(tempfile.mkdtemp(prefix="colorray-ray-"))
    cluster = RayCluster(root)
    cluster.start()
    os.environ["RAY_ADDRESS"] = cluster.address
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        os.environ.pop("RAY_ADDRESS", None)
        cluster.stop()
        time.sleep(1)


def pytest_collection_modifyitems(config, items):
    """The fast layer (`-m "not slow"`) runs no Ray: a test using the cluster must be marked slow."""
    unmarked = [item.nodeid for item in items if "ray_cluster" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("tests that use ray_cluster must be marked slow: " + ", ".join(unmarked))


@pytest.fixture(autouse=True)
def _fast_tests_start_no_ray(request):
    """A fast test that connects to or starts Ray fails: move it to the slow layer or remove the Ray use.

    Only a connection the test itself made counts: in a full run the session cluster of earlier slow
    tests is already connected when later fast tests run.
    """
    ray = sys.modules.get("ray")
    connected_before = ray is not None and ray.is_initialized()
    yield
    ray = sys.modules.get("ray")
    if (request.node.get_closest_marker("slow") is None and not connected_before
            and ray is not None and ray.is_initialized()):
        ray.shutdown()
        pytest.fail("a fast test (not marked slow) initialized Ray")
