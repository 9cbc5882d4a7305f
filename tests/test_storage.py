"""Storage URIs: the helpers of ``colorray.data.storage`` on local folders, then a whole run on a real
S3-compatible server (moto in server mode on 127.0.0.1): shards, training, resume, listing, serve and colorize
all from the bucket; and shards, exports and colorize on a GCS emulator (gcp-storage-emulator, 127.0.0.1)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.fs as pafs
import pytest
import requests
from conftest import free_port
from PIL import Image
from skimage import data as skimage_data

from colorray import colorize
from colorray.data import storage
from colorray.data.loader import open_shard_set, val_loader
from colorray.data.shards import main as write_shards_main
from colorray.export import ExportError, load_generator, save_generator
from colorray.models import create_model
from colorray.train.driver import main as train

BUCKET = "colorray-test"
FAST = ["data.samples_per_epoch=32", "data.val_samples=8", "run.sample_images=2", "data.batch_size=8",
        "scaling.num_workers=1", "run.log_every_steps=100"]


# --- the helpers on local folders (fast) ---


def test_join_split_and_uri_of_treat_uris_and_paths_alike(tmp_path):
    assert storage.join("s3://b/runs/", "a", "config.yaml") == "s3://b/runs/a/config.yaml"
    assert storage.split("gs://b/runs/a/") == ("gs://b/runs", "a")
    assert storage.join(str(tmp_path), "a") == str(tmp_path / "a")
    assert storage.split(str(tmp_path / "a")) == (str(tmp_path), "a")
    assert storage.uri_of("s3://b/runs", "b/runs/a/checkpoint_0") == "s3://b/runs/a/checkpoint_0"
    assert storage.uri_of(str(tmp_path), str(tmp_path / "c")) == str(tmp_path / "c")
    assert storage.is_uri("s3://b/x") and storage.is_uri("gs://b/x") and not storage.is_uri("http://h/x")
    assert storage.ray_storage(str(tmp_path)) == (str(tmp_path), None)


def test_read_write_list_upload_and_download_on_a_local_folder(tmp_path):
    storage.write_text(str(tmp_path / "run" / "a" / "config.yaml"), "x: 1\n")
    assert storage.read_text(str(tmp_path / "run" / "a" / "config.yaml")) == "x: 1\n"
    assert storage.is_file(str(tmp_path / "run" / "a" / "config.yaml")) and storage.is_dir(str(tmp_path / "run"))
    storage.upload(tmp_path / "run", str(tmp_path / "copy"))
    assert storage.list_files(str(tmp_path / "copy")) == ["a/config.yaml"]
    assert storage.list_files(str(tmp_path / "none")) == [] and not storage.exists(str(tmp_path / "none"))
    assert storage.download(str(tmp_path / "copy" / "a" / "config.yaml"), tmp_path / "d.yaml").read_text() == "x: 1\n"
    with pytest.raises(storage.StorageError, match="cannot read .*none"):
        storage.read_bytes(str(tmp_path / "none"))


def test_runtime_env_forwards_only_the_storage_settings_that_are_set(monkeypatch):
    for name in storage.FORWARDED_ENV:
        monkeypatch.delenv(name, raising=False)
    assert storage.runtime_env() == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HOME_SECRET", "no")
    assert storage.runtime_env() == {"env_vars": {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}}


# --- a real S3-compatible server (slow) ---


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 with a bucket; the standard AWS variables point at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    saved = {name: os.environ.get(name) for name in (*settings, "AWS_ENDPOINT_URL_S3")}
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    os.environ.update(settings)
    pafs.S3FileSystem(endpoint_override=settings["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir(BUCKET)
    try:
        yield f"s3://{BUCKET}"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def shards(s3, tmp_path_factory):
    """``python -m colorray.shards PHOTOS s3://...``: 40 crops of scikit-image photos, 8 of them for val."""
    photos = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry"):
        image = getattr(skimage_data, name)()
        for index in range(8):
            top, left = 20 * index, 25 * index
            Image.fromarray(image[top:top + 96, left:left + 96]).save(photos / f"{name}-{index}.png")
    uri = f"{s3}/shards"
    assert write_shards_main([str(photos), uri, "--val-count", "8", "--shard-size", "16", "--workers", "1",
                              "--quiet"]) == 0
    assert write_shards_main([str(photos), uri, "--quiet"]) == 2  # never over existing shards
    return uri


@pytest.mark.slow
def test_shards_stream_from_the_bucket(shards):
    val = open_shard_set(f"{shards}/val")
    assert val.total_samples == 8 and all(url.startswith("s3://") for url in val.urls)
    assert open_shard_set(shards).total_samples == 32  # a dataset root: its train split
    batch = next(iter(val_loader(val, image_size=32, batch_size=4, rank=0, world_size=1)))
    assert batch["rgb"].shape == (4, 3, 32, 32) and batch["decode_errors"] == 0
    storage.copy(val.urls[0], f"{shards}-bare/part.tar")
    listed = open_shard_set(f"{shards}-bare")  # no index.json: the prefix's *.tar objects
    assert listed.urls == [f"{shards}-bare/part.tar"] and listed.sample_counts is None


@pytest.fixture(scope="module")
def gcs():
    """gcp-storage-emulator's server on 127.0.0.1 with a bucket; STORAGE_EMULATOR_HOST points gs:// at it."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    saved = os.environ.get(storage.GCS_EMULATOR_ENV)
    os.environ[storage.GCS_EMULATOR_ENV] = f"http://127.0.0.1:{port}"
    try:
        yield f"gs://{BUCKET}"
    finally:
        server.stop()
        if saved is None:
            os.environ.pop(storage.GCS_EMULATOR_ENV, None)
        else:
            os.environ[storage.GCS_EMULATOR_ENV] = saved


def test_shards_exports_and_colorize_on_google_cloud_storage(gcs, tmp_path):
    """No Ray: fast enough for the fast layer (under a second)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(6):
        Image.fromarray(skimage_data.astronaut()[40 * index:40 * index + 96, 30 * index:30 * index + 96]).save(
            photos / f"a-{index}.png")
    uri = f"{gcs}/shards"
    assert write_shards_main([str(photos), uri, "--val-count", "2", "--workers", "1", "--quiet"]) == 0
    assert {"index.json", "train/index.json", "val/index.json"} <= set(storage.list_files(uri))
    train = open_shard_set(uri)
    assert train.total_samples == 4 and all(url.startswith("gs://") for url in train.urls)
    batch = next(iter(val_loader(open_shard_set(f"{uri}/val"), image_size=32, batch_size=2, rank=0, world_size=1)))
    assert batch["rgb"].shape == (2, 3, 32, 32) and batch["decode_errors"] == 0

    save_generator(tmp_path / "g.pt", create_model("cnn", width=4), 32)
    storage.upload(tmp_path / "g.pt", f"{gcs}/run/generator.pt")
    _, info = load_generator(f"{gcs}/run")
    assert info.source == f"{gcs}/run/generator.pt"
    assert colorize.main([f"{gcs}/run", str(photos / "a-0.png"), "--out", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "a-0.png").size == (96, 96)
    with pytest.raises(ExportError, match=f"model path not found: {gcs}/nothing"):
        load_generator(f"{gcs}/nothing")


@pytest.mark.slow
def test_missing_objects_give_one_clear_error(s3, tmp_path):
    with pytest.raises(ExportError, match=f"model path not found: {s3}/nothing"):
        load_generator(f"{s3}/nothing")
    save_generator(tmp_path / "g.pt", create_model("cnn", width=4), 32)
    storage.upload(tmp_path / "g.pt", f"{s3}/exports/generator.pt")
    _, info = load_generator(f"{s3}/exports")
    assert info.model == "cnn" and info.source == f"{s3}/exports/generator.pt"
    with pytest.raises(ExportError, match="holds no generator.pt"):
        load_generator(s3)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_resume_serve_and_colorize_from_the_bucket(ray_cluster, shards, s3, tmp_path, capsys):
    runs = f"{s3}/runs"
    run = f"{runs}/s3run"
    assert train([f"data.train={shards}", f"run.storage_path={runs}", "run.name=s3run", "run.epochs=1",
                  "run.tracking=mlflow", *FAST]) == 0
    assert f"generator export: {run}/generator.pt" in capsys.readouterr().out
    assert train([f"data.train={shards}", f"run.storage_path={runs}", "run.name=s3run", "model.name=unet"]) == 2
    assert "run.name s3run: the run's checkpoints hold model cnn" in capsys.readouterr().err

    assert train(["--resume", run, "run.epochs=2"]) == 0
    files = storage.list_files(run)
    assert {"config.yaml", "metrics.jsonl", "generator.pt", "generator-last.pt", "samples/epoch-001.png",
            "samples/epoch-002.png", "mlflow.db"} <= set(files)
    assert any(name.startswith("tensorboard/events.") for name in files)
    assert any(name.startswith("checkpoint_") and name.endswith("/state.pt") for name in files)
    lines = [json.loads(line) for line in storage.read_text(f"{run}/metrics.jsonl").splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert_one_mlflow_run_over_both_epochs(run, files, [line["step"] for line in lines], tmp_path)

    photo = tmp_path / "cat.png"
    Image.fromarray(skimage_data.chelsea()[:48, :40]).save(photo)
    assert colorize.main([run, str(photo), "--out", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "cat.png").size == (40, 48)
    assert serve_once(run, photo.read_bytes(), ray_cluster).shape == (48, 40, 3)


def assert_one_mlflow_run_over_both_epochs(run: str, files: list[str], steps: list[int], tmp_path) -> None:
    """The default MLflow store (run.tracking=mlflow without a URI) lives in the run folder; --resume continued
    the same MLflow run."""
    from mlflow.tracking import MlflowClient

    database = storage.download(f"{run}/mlflow.db", tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{database}")
    (tracked,) = client.search_runs([client.get_experiment_by_name("colorray").experiment_id])
    assert [point.step for point in client.get_metric_history(tracked.info.run_id, "val/psnr")] == steps
    assert any(name.startswith("mlartifacts/") and name.endswith("samples/epoch-002.png") for name in files)


def serve_once(model: str, image: bytes, cluster) -> np.ndarray:
    """``python -m colorray.serve --model URI`` joined to the test cluster: one request, then SIGTERM."""
    port = free_port()
    env = dict(os.environ, RAY_ADDRESS=cluster.address)
    process = subprocess.Popen([sys.executable, "-m", "colorray.serve", "--model", model, "--port", str(port),
                                "--num-cpus", "0.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read()[-3000:]
            try:
                response = requests.post(f"http://127.0.0.1:{port}/colorize", data=image, timeout=30)
                if response.status_code == 200:
                    return np.asarray(Image.open(io.BytesIO(response.content)))
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise TimeoutError("the service did not answer in 90 s")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
