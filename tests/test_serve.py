"""Ray Serve app tests: serve/config.yaml deployed on a real local cluster, driven over real HTTP.

One module-scoped deployment (through the dashboard's Serve REST API, as
``serve deploy`` does) serves every test: round trips, bad inputs, batching,
the model swap through ``user_config``, the HTML page in headless Chromium and
the ``colorray.client`` CLI. The settings and query checks at the top need no
cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml
from chromium import needs_chromium, open_chromium
from conftest import free_port
from PIL import Image
from skimage import data

from colorray import color
from colorray.export import save_generator
from colorray.models import create_model
from colorray.serve.app import (
    SERVICE_NAME,
    ServeSettings,
    SettingsError,
    Upload,
    build_app,
    parse_query,
    parse_upload,
)
from colorray.serve.errors import RequestError

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).parents[1]
CONFIG_FILE = ROOT / "serve" / "config.yaml"
LIMIT_PIXELS = 1_000_000
LIMIT_BYTES = 1_000_000


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def color_photo() -> Image.Image:
    return Image.fromarray(data.astronaut()).resize((203, 301))


def gray_photo() -> Image.Image:
    return Image.fromarray(data.camera()).resize((203, 301))


def lightness(rgb: np.ndarray) -> torch.Tensor:
    return color.rgb_to_lab(torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None])[0, 0]


# --- settings and query checks (no cluster) ---


def test_settings_reject_unknown_and_out_of_range_keys():
    with pytest.raises(SettingsError, match="max_batch: Extra inputs"):
        ServeSettings.from_args({"model": "m", "max_batch": 4})
    with pytest.raises(SettingsError, match="max_batch_size: .*greater than or equal to 1"):
        ServeSettings.from_args({"model": "m", "max_batch_size": 0})
    with pytest.raises(SettingsError, match="model: Field required"):
        ServeSettings.from_args({})
    assert ServeSettings(model="a").merged({"max_batch_size": 3}).max_batch_size == 3


@pytest.mark.parametrize("source", ["serve/config.yaml", "cluster/rayservice.yaml"])
def test_config_files_fit_the_serve_schema_and_our_settings(source):
    from ray.serve.schema import ServeDeploySchema

    document = yaml.safe_load((ROOT / source).read_text())
    config = yaml.safe_load(document["spec"]["serveConfigV2"]) if document.get("kind") == "RayService" else document
    application = ServeDeploySchema.model_validate(config).applications[0]
    assert application.import_path == "colorray.serve.app:app"
    ServeSettings.from_args(application.args)
    deployment = application.deployments[0]
    assert deployment.name == SERVICE_NAME
    assert deployment.max_ongoing_requests >= application.args["max_batch_size"]


def test_build_app_keeps_max_ongoing_requests_at_least_max_batch_size():
    with pytest.raises(SettingsError, match=r"max_ongoing_requests \(4\) must be >= max_batch_size \(8\)"):
        build_app(ServeSettings(model="m", max_batch_size=8), max_ongoing_requests=4)


@pytest.mark.parametrize(
    "query, space, message",
    [
        ({"temperature": "1.5"}, "bins", "temperature must be in 0..1, got 1.5"),
        ({"temperature": "hot"}, "bins", "temperature must be a number in 0..1, got 'hot'"),
        ({"temperature": "nan"}, "bins", "temperature must be in 0..1"),
        ({"temperature": "0.3"}, "ab", "temperature applies only to classification models"),
        ({"format": "gif"}, "ab", "format must be one of png, jpeg, got 'gif'"),
        ({"fmt": "png"}, "ab", "unknown query parameter 'fmt'"),
    ],
)
def test_bad_query_values_are_named(query, space, message):
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_query(query, space)


def test_good_query_values_parse():
    assert parse_query({}, "ab") == ("png", None)
    assert parse_query({"format": "JPEG", "temperature": "0"}, "bins") == ("jpeg", 0.0)


# --- the deployed app ---


class Service:
    def __init__(self, url: str, config: dict, client):
        self.url = url
        self.config = config
        self.client = client

    def info(self) -> dict:
        return requests.get(f"{self.url}/info", timeout=10).json()

    def colorize(self, body: bytes, **params) -> requests.Response:
        return requests.post(f"{self.url}/colorize", data=body, params=params, timeout=60)

    def deploy(self, user_config: dict) -> None:
        config = copy.deepcopy(self.config)
        config["applications"][0]["deployments"][0]["user_config"] = user_config
        self.client.deploy_applications(config)

    def wait_for_info(self, check, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException, ValueError):
                response = requests.get(f"{self.url}/info", timeout=5)
                if response.ok and check(response.json()):
                    return response.json()
            time.sleep(0.2)
        raise TimeoutError(f"the service at {self.url} did not reach the expected state in {timeout:.0f} s")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A cnn export inside a run folder's best/ and an eccv16 (bins) export file, random weights."""
    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    save_generator(root / "run" / "best" / "generator.pt", create_model("cnn", width=8), 64, {"val/psnr": 21.5})
    save_generator(root / "eccv16.pt", create_model("eccv16", width=0.125), 64, {"val/psnr": 20.0})
    return {"cnn": root / "run", "eccv16": root / "eccv16.pt"}


def config_for_test(port: int, model: Path) -> dict:
    """serve/config.yaml with the test's model, port, one replica and small limits."""
    config = yaml.safe_load(CONFIG_FILE.read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    application = config["applications"][0]
    application["args"].update(
        model=str(model), batch_wait_timeout_s=0.1, max_pixels=LIMIT_PIXELS, max_bytes=LIMIT_BYTES
    )
    deployment = application["deployments"][0]
    deployment.pop("autoscaling_config")
    deployment.update(num_replicas=1, max_ongoing_requests=32)
    return config


@pytest.fixture(scope="module")
def service(ray_cluster, exports):
    from ray import serve
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = config_for_test(port, exports["cnn"])
    running = Service(f"http://127.0.0.1:{port}", config, ServeSubmissionClient(ray_cluster.dashboard_url))
    running.client.deploy_applications(config)
    try:
        running.wait_for_info(lambda info: info["model"] == "cnn", timeout=90)
        yield running
    finally:
        serve.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("photo", [color_photo, gray_photo], ids=["color", "gray"])
@pytest.mark.parametrize("upload", ["raw", "multipart"])
def test_round_trip_keeps_size_and_lightness(service, photo, upload):
    image = photo()
    body = encode(image)
    if upload == "raw":
        response = service.colorize(body)
    else:
        response = requests.post(f"{service.url}/colorize", files={"image": ("photo.png", body)}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    result = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    source = np.asarray(image.convert("RGB"))
    assert result.shape == source.shape == (301, 203, 3)
    difference = (lightness(result) - lightness(source)).abs()
    assert difference.max() < 2.0 and difference.mean() < 0.5


@pytest.mark.slow
def test_jpeg_output_and_alpha_kept_in_png(service):
    rgba = np.dstack([np.asarray(color_photo()), np.tile(np.linspace(0, 255, 203).astype(np.uint8), (301, 1))])
    body = encode(Image.fromarray(rgba, "RGBA"))
    png = service.colorize(body)
    assert png.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content)))[..., 3], rgba[..., 3])
    jpeg = service.colorize(body, format="jpeg")
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (203, 301)


@pytest.mark.slow
def test_exif_orientation_is_respected(service):
    image = color_photo()
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    response = service.colorize(encode(image, "JPEG", exif=exif.tobytes()))
    assert Image.open(io.BytesIO(response.content)).size == (301, 203)


def bad_requests() -> list:
    photo = encode(color_photo())
    bomb = encode(Image.new("L", (1200, 1000)))
    noise = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)))
    chunks = (noise[start : start + 65536] for start in range(0, len(noise), 65536))
    cases = [
        ("empty", {"data": b""}, 400, "empty image"),
        ("not an image", {"data": b"hello, not a photo"}, 400, "not a readable image"),
        ("truncated", {"data": photo[: len(photo) // 2]}, 400, "truncated"),
        ("wrong form field", {"files": {"photo": ("a.png", photo)}}, 400, "no 'image' field (fields sent: 'photo')"),
        ("text form field", {"data": {"image": "x"}, "files": {"other": ("b", b"1")}}, 400, "must be a file upload"),
        ("too many pixels", {"data": bomb}, 400, f"over the limit of {LIMIT_PIXELS}"),
        ("too many bytes", {"data": noise}, 413, f"over the limit of {LIMIT_BYTES}"),
        ("too many bytes, chunked", {"data": chunks}, 413, f"over the limit of {LIMIT_BYTES} bytes"),
        ("bad format", {"data": photo, "params": {"format": "gif"}}, 400, "format must be one of png, jpeg"),
        ("temperature on ab model", {"data": photo, "params": {"temperature": "0.5"}}, 400, "only to classification"),
        ("unknown parameter", {"data": photo, "params": {"size": "64"}}, 400, "unknown query parameter 'size'"),
    ]
    return [pytest.param(*case[1:], id=case[0]) for case in cases]


def parse_prepared(request_options: dict, output_space: str = "ab") -> Upload:
    """What the service makes of a request built by ``requests`` (never sent): ``parse_upload`` without Serve."""
    prepared = requests.Request("POST", "http://colorray.invalid/colorize", **request_options).prepare()
    body = prepared.body if prepared.body is not None else b""

    async def chunks():
        for chunk in ([body] if isinstance(body, (bytes, str)) else body):
            yield chunk.encode() if isinstance(chunk, str) else chunk

    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(prepared.url).query))
    settings = ServeSettings(model="m", max_pixels=LIMIT_PIXELS, max_bytes=LIMIT_BYTES)
    return asyncio.run(parse_upload(query, prepared.headers, chunks(), settings, output_space))


@pytest.mark.parametrize("request_options, status, message", bad_requests())
def test_bad_requests_are_refused_before_the_model_runs(request_options, status, message):
    with pytest.raises(RequestError) as refused:
        parse_prepared(request_options)
    assert refused.value.status == status and message in refused.value.message


@pytest.mark.parametrize("upload", ["raw", "multipart"])
def test_good_uploads_parse_to_the_decoded_image(upload):
    photo = encode(color_photo(), "PNG")
    options = {"data": photo} if upload == "raw" else {"files": {"image": ("a.png", photo)}}
    parsed = parse_prepared({**options, "params": {"format": "jpeg", "temperature": "0.2"}}, output_space="bins")
    assert (parsed.fmt, parsed.temperature) == ("jpeg", 0.2)
    assert parsed.image.rgb.shape == (301, 203, 3) and parsed.image.alpha is None
    assert np.array_equal(parsed.image.rgb, np.asarray(color_photo()))


@pytest.mark.slow
@pytest.mark.parametrize("request_options, status, message", bad_requests())
def test_bad_input_gets_json_4xx_and_service_keeps_serving(service, request_options, status, message):
    response = requests.post(f"{service.url}/colorize", timeout=60, **request_options)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert service.colorize(encode(gray_photo())).status_code == 200


@pytest.mark.slow
def test_unknown_route_is_json_404(service):
    response = requests.get(f"{service.url}/nope", timeout=10)
    assert response.status_code == 404 and response.json() == {"error": "no route GET /nope"}


@pytest.mark.slow
def test_concurrent_requests_are_batched(service):
    before = service.info()["counters"]
    body = encode(color_photo(), "JPEG")
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: service.colorize(body).status_code, range(16)))
    after = service.info()["counters"]
    assert statuses == [200] * 16
    assert after["colorized"] - before["colorized"] == 16
    assert after["batches"] - before["batches"] < 16
    assert after["largest_batch"] > 1


@pytest.mark.slow
def test_a_lone_request_runs_at_once_without_waiting_for_a_batch(service):
    service.deploy({"batch_wait_timeout_s": 10.0})
    try:
        before = service.wait_for_info(lambda info: info["settings"]["batch_wait_timeout_s"] == 10.0)["counters"]
        for _ in range(2):  # each well inside the 10 s a batch would wait to fill
            response = requests.post(f"{service.url}/colorize", data=encode(color_photo(), "JPEG"), timeout=5)
            assert response.status_code == 200
        after = service.info()["counters"]
        assert after["batches"] - before["batches"] == 2 and after["colorized"] - before["colorized"] == 2
    finally:
        service.deploy({})
        service.wait_for_info(lambda info: info["settings"]["batch_wait_timeout_s"] == 0.1)


@pytest.mark.slow
def test_healthz_and_info(service, exports):
    assert requests.get(f"{service.url}/healthz", timeout=10).json() == {"status": "ok", "model": "cnn"}
    info = service.info()
    assert info["source"] == str(exports["cnn"] / "best" / "generator.pt")
    assert info["options"] == {"width": 8} and info["metrics"] == {"val/psnr": 21.5}
    assert info["output_space"] == "ab" and info["image_size"] == 64 and info["created"]
    assert info["settings"]["max_batch_size"] == 8 and info["settings"]["max_bytes"] == LIMIT_BYTES
    assert set(info["counters"]) == {"requests", "rejected", "colorized", "batches", "largest_batch", "mean_batch_size"}


@pytest.mark.slow
def test_client_cli_round_trip(service, tmp_path):
    inputs = tmp_path / "in"
    (inputs / "nested").mkdir(parents=True)
    color_photo().save(inputs / "astronaut.jpg")
    gray_photo().save(inputs / "nested" / "camera.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "colorray.client", str(inputs), "--url", service.url, "--out", str(out)]
    options = ["--concurrency", "2", "--format", "jpeg"]
    done = subprocess.run([*command, *options], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    results = out / "in"  # a folder input keeps its name and structure, as colorize does
    assert Image.open(results / "astronaut.jpg").size == Image.open(results / "nested" / "camera.jpg").size == (203, 301)
    (inputs / "broken.png").write_bytes(b"not a png")
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "broken.png: not a readable image" in refused.stderr


@pytest.mark.slow
def test_client_cli_errors(tmp_path):
    command = [sys.executable, "-m", "colorray.client", "--out", str(tmp_path / "out")]
    missing = subprocess.run([*command, str(tmp_path / "missing.jpg")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("error: input not found")
    color_photo().save(tmp_path / "a.png")
    no_server = [*command, str(tmp_path / "a.png"), "--url", f"http://127.0.0.1:{free_port()}"]
    unreachable = subprocess.run(no_server, capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == 2 and "error: cannot reach the colorray service" in unreachable.stderr


def test_serve_cli_rejects_a_bad_model_path_and_a_busy_port(tmp_path, capsys, exports, monkeypatch):
    """Without a cluster to join (the session's test cluster sets RAY_ADDRESS once a slow test started it),
    the port is checked before Ray starts."""
    from colorray.serve.launch import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    assert main(["--model", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"error: model path not found: {tmp_path / 'none'}\n"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["--model", str(exports["cnn"]), "--port", str(busy.getsockname()[1])]) == 2
    assert capsys.readouterr().err.startswith("error: cannot listen on 127.0.0.1:")


@pytest.mark.slow
def test_serve_cli_on_a_running_cluster_refuses_a_port_its_proxy_cannot_move_to(service, exports, capsys):
    """Finding 1: Serve already runs here (the service fixture's proxy); --port elsewhere is refused, naming it."""
    from colorray.serve.launch import main

    asked = free_port()
    assert main(["--model", str(exports["cnn"]), "--port", str(asked)]) == 2
    running = service.url.removeprefix("http://")
    assert capsys.readouterr().err.startswith(
        f"error: Serve already runs on this Ray cluster with its HTTP proxy on {running}, and a running proxy "
        f"cannot move to port {asked}: pass --port {running.split(':')[1]}")
    assert service.info()["model"] == "cnn", "the running service is untouched"


@pytest.mark.slow
@needs_chromium
def test_html_page_uploads_and_shows_the_result_in_chromium(service, tmp_path):
    photo = tmp_path / "astronaut.jpg"
    color_photo().save(photo)
    with open_chromium(tmp_path / "profile") as browser:
        browser.call("Page.navigate", url=f"{service.url}/")
        browser.wait_until("document.getElementById('model')?.textContent.startsWith('Model: cnn')", timeout=30)
        document = browser.call("DOM.getDocument")["root"]["nodeId"]
        file_input = browser.call("DOM.querySelector", nodeId=document, selector="#file")["nodeId"]
        browser.call("DOM.setFileInputFiles", files=[str(photo)], nodeId=file_input)
        state = browser.wait_until(
            "['done', 'error'].find(s => s === document.getElementById('status').dataset.state)", timeout=30)
        assert state == "done", browser.evaluate("document.getElementById('status').textContent")
        shown = browser.evaluate("['original', 'gray', 'result'].map(id => [document.getElementById(id).naturalWidth,"
                                 " document.getElementById(id).naturalHeight])")
        assert shown == [[203, 301]] * 3
        download = browser.evaluate(
            "[document.getElementById('download').download, document.getElementById('download').href]")
        assert download[0] == "astronaut-colorized.png" and download[1].startswith("blob:")


@pytest.mark.slow
def test_user_config_swaps_the_model_without_a_restart(service, exports):
    """Runs last: swaps to a classification (bins) model through user_config, then back."""
    before = service.info()
    service.deploy({"model": str(exports["eccv16"]), "max_batch_size": 4})
    after = service.wait_for_info(lambda info: info["model"] == "eccv16")
    assert after["source"] == str(exports["eccv16"]) and after["output_space"] == "bins"
    assert after["replica"] == before["replica"]
    assert after["settings"]["max_batch_size"] == 4
    body = encode(color_photo())
    assert service.colorize(body, temperature="0.2").status_code == 200
    too_hot = service.colorize(body, temperature="1.5")
    assert too_hot.status_code == 400 and too_hot.json() == {"error": "temperature must be in 0..1, got 1.5"}
    service.deploy({})
    restored = service.wait_for_info(lambda info: info["model"] == "cnn")
    assert restored["replica"] == before["replica"]
