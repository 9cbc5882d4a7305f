"""Pretrained weights on demand: the offline error, and real downloads from a local HTTP server.

The server is a real ``http.server`` on 127.0.0.1 serving small fake weight
files; it counts the GETs so the test can see that two processes on one node
download a file once. Nothing here reaches the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from colorray.models import create_model, weights

FETCH = "import sys; from colorray.models.weights import fetch; print(fetch(sys.argv[1], 'test'))"


class WeightsServer(http.server.ThreadingHTTPServer):
    """Serves files from ``root`` slowly enough that concurrent fetches overlap; counts GETs per path."""

    def __init__(self, root: Path):
        self.root, self.gets = root, []
        super().__init__(("127.0.0.1", 0), WeightsHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class WeightsHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.gets.append(self.path)
        file = self.server.root / self.path.lstrip("/")
        if not file.is_file():
            self.send_error(404)
            return
        body = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        time.sleep(1.0)  # a slow link: the second process must wait on the lock, not download again
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = WeightsServer(root)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def online(tmp_path, monkeypatch):
    """An empty torch hub cache with downloads allowed (the test suite runs with COLORRAY_OFFLINE=1)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.OFFLINE_ENV)
    return tmp_path / "torch" / "hub" / "checkpoints"


def hashed_weights_file(folder: Path) -> Path:
    """A small state dict saved under a torchvision-style name carrying its own SHA-256 prefix."""
    draft = folder / "draft.pth"
    torch.save({"features.0.weight": torch.arange(12.0).view(3, 4)}, draft)
    digest = hashlib.sha256(draft.read_bytes()).hexdigest()[:8]
    return draft.rename(folder / f"tiny-{digest}.pth")


def test_offline_a_missing_file_is_one_error_naming_it_and_where_it_goes(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(weights.PretrainedWeightsMissing) as caught:
        create_model("resnet_unet", pretrained="imagenet")
    message = str(caught.value)
    assert f"not found at {expected}" in message and "COLORRAY_OFFLINE=1" in message
    assert f"into {expected.parent}" in message and "download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "\n" not in message and not expected.parent.exists()


def test_two_processes_on_one_node_download_a_file_once(server, online):
    served = hashed_weights_file(server.root)
    url = f"{server.url}/{served.name}"
    env = {k: v for k, v in os.environ.items() if k != weights.OFFLINE_ENV}
    fetchers = [subprocess.Popen([sys.executable, "-c", FETCH, url], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in fetchers]
    assert [process.returncode for process in fetchers] == [0, 0], outputs
    cached = online / served.name
    assert [out.strip() for out, _ in outputs] == [str(cached)] * 2
    assert server.gets == [f"/{served.name}"]  # one download for both
    announced = [err for _, err in outputs if "colorray: downloading test weights" in err]
    assert len(announced) == 1 and f"downloaded {served.name}" in announced[0]
    assert cached.read_bytes() == served.read_bytes()
    assert weights.fetch(url, "test") == cached and len(server.gets) == 1  # cached: no second request


def test_a_mirror_serving_a_foreign_file_is_refused_and_nothing_is_cached(server, online, monkeypatch):
    (server.root / "resnet18-f37072fd.pth").write_bytes(b"not the resnet18 weights")
    monkeypatch.setenv(weights.MIRROR_ENV, server.url + "/")
    assert weights.weights_url("resnet18") == f"{server.url}/resnet18-f37072fd.pth"
    with pytest.raises(weights.PretrainedWeightsMissing, match=re.escape("invalid hash value")) as caught:
        create_model("resnet_unet", pretrained="imagenet")
    assert "could not download pretrained resnet18 weights resnet18-f37072fd.pth (" in str(caught.value)
    assert f"fetch {server.url}/resnet18-f37072fd.pth into {online} by hand" in str(caught.value)
    assert server.gets == ["/resnet18-f37072fd.pth"]
    assert not (online / "resnet18-f37072fd.pth").exists()
    assert not [path for path in online.iterdir() if path.suffix == ".partial"]


def test_an_unreachable_source_names_the_file_and_the_way_out(online, monkeypatch):
    monkeypatch.setenv(weights.MIRROR_ENV, "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(weights.PretrainedWeightsMissing) as caught:
        weights.resolve_weights_path("alexnet", "imagenet")
    assert caught.value.reason.startswith("could not download pretrained alexnet weights alexnet-owt-7be5be79.pth (")
    message = str(caught.value)
    assert "fetch http://127.0.0.1:9/alexnet-owt-7be5be79.pth into" in message
    assert "COLORRAY_WEIGHTS_URL" in message and "pretrained=none" in message and "\n" not in message
    with pytest.raises(weights.PretrainedWeightsMissing) as again:  # not retried within the process
        weights.resolve_weights_path("alexnet", "imagenet")
    assert again.value is caught.value
