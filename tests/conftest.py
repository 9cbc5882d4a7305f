"""Shared test fixtures: one real local Ray cluster per test session, stopped at the end.

The cluster is started with ``ray start --head`` on 127.0.0.1 (free ports, its
own temp folder), so the same cluster serves ``ray.init`` users, ``ray job
submit`` tests and Serve tests. Token auth is switched off (see the team notes).
"""

from __future__ import annotations

import os
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
        self.env = dict(os.environ, RAY_TMPDIR=str(root / "tmp"))

    def start(self) -> None:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
            "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}",
            "--num-cpus=4", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
            "--disable-usage-stats", f"--temp-dir={self.root / 'tmp'}",
        ]
        subprocess.run(command, check=True, env=self.env, capture_output=True, timeout=120)

    def stop(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"],
            env=self.env, capture_output=True, timeout=120,
        )


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
