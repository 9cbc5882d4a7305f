"""The cluster files: the launcher YAML against Ray's schema, the KubeRay manifests, the ImageNet config.

Nothing here starts Ray or talks to a cloud: the files are parsed and checked
against Ray's own validators, against each other (one image, one entry point,
enough GPUs and CPUs for the config's scaling) and against colorray (the
config loads and names registered parts; the weights it needs are fetched).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

from colorray.config import load_config
from colorray.losses.objective import check_losses
from colorray.models import model_option_names, output_space
from colorray.models.weights import TORCHVISION_FILES
from colorray.train.optim import check_optim

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "aws-gpu.yaml"
MANIFESTS = {"RayCluster": CLUSTER / "raycluster.yaml", "RayJob": CLUSTER / "rayjob.yaml"}
TRAIN_CONFIG = "cluster/imagenet.yaml"
IMAGE = "rayproject/ray:2.60.0-py311-gpu"
ENTRY_POINT = ["python", "-m", "colorray.train", "--config", TRAIN_CONFIG]
WEIGHTS_URL = re.compile(r"https://download\.pytorch\.org/models/(\S+\.pth)")


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def read_manifest(kind: str) -> dict:
    documents = [doc for doc in yaml.safe_load_all(MANIFESTS[kind].read_text()) if doc is not None]
    assert len(documents) == 1, f"{MANIFESTS[kind].name} should hold one manifest"
    return documents[0]


@pytest.fixture(scope="module")
def imagenet():
    return load_config(REPO / TRAIN_CONFIG)


def cluster_spec(kind: str) -> dict:
    manifest = read_manifest(kind)
    return manifest["spec"] if kind == "RayCluster" else manifest["spec"]["rayClusterSpec"]


def pod_templates(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]] + [group["template"] for group in spec["workerGroupSpecs"]]


def fetched_weights(text: str) -> set[str]:
    return set(WEIGHTS_URL.findall(text))


def needed_weights(config) -> set[str]:
    needed = set()
    if config.model.options.get("pretrained") == "imagenet":
        needed.add(TORCHVISION_FILES[f"resnet{config.model.options['depth']}"])
    if config.run.metric in ("val/lpips", "auto"):  # auto is val/lpips where the AlexNet weights can be had
        needed.add(TORCHVISION_FILES["alexnet"])
    return needed


def workers_that_fit(gpus: float, cpus: float, scaling) -> int:
    """Train workers one node (or pod) of this size can hold."""
    return int(min(gpus // scaling.gpus_per_worker, cpus // scaling.cpus_per_worker))


# --- The training config ----------------------------------------------------------


def test_imagenet_config_loads_and_is_the_resnet_unet_gan_recipe(imagenet):
    assert imagenet.model.name == "resnet_unet" and imagenet.gan.enabled and imagenet.gan.pretrain_epochs == 5
    assert imagenet.scaling.use_gpu and imagenet.run.amp and imagenet.data.image_size == 256
    locations = (imagenet.data.train, imagenet.data.val, imagenet.run.storage_path)
    assert all(location.startswith("s3://") for location in locations)
    assert len({location.split("/")[2] for location in locations}) == 1, "one bucket for data and runs"


def test_imagenet_config_names_registered_parts_that_fit_together(imagenet):
    space = output_space(imagenet.model.name)
    assert set(imagenet.model.options) <= set(model_option_names(imagenet.model.name))
    assert output_space(imagenet.gan.discriminator) == "critic"
    check_losses(imagenet, space)
    check_optim(imagenet.optim)


# --- The cluster launcher -----------------------------------------------------------


def test_launcher_config_validates_against_the_schema_ray_ships():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = read_yaml(LAUNCHER)
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))


def test_launcher_installs_this_checkout_and_fetches_the_weights_the_config_needs(imagenet):
    config = read_yaml(LAUNCHER)
    assert config["docker"]["image"] == IMAGE
    [checkout] = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert any(command.startswith(f"pip install {checkout}") for command in config["setup_commands"])
    assert needed_weights(imagenet) <= fetched_weights("\n".join(config["setup_commands"]))


def test_launcher_gpu_nodes_hold_every_train_worker(imagenet):
    config = read_yaml(LAUNCHER)
    workers = sum(
        node["min_workers"] * workers_that_fit(node["resources"].get("GPU", 0), node["resources"]["CPU"],
                                               imagenet.scaling)
        for name, node in config["available_node_types"].items() if name != config["head_node_type"]
    )
    assert workers >= imagenet.scaling.num_workers


# --- KubeRay ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MANIFESTS)
def test_kuberay_manifest_has_the_required_fields(kind):
    manifest = read_manifest(kind)
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == kind
    assert manifest["metadata"]["name"]
    spec = cluster_spec(kind)
    assert spec["rayVersion"] == ray.__version__ == IMAGE.split(":")[1].split("-")[0]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for template in pod_templates(spec):
        assert [container["image"] for container in template["spec"]["containers"]] == [IMAGE]


@pytest.mark.parametrize("kind", MANIFESTS)
def test_kuberay_gpu_pods_hold_every_train_worker_and_fetch_the_weights(kind, imagenet):
    spec = cluster_spec(kind)
    workers = 0
    for group in spec["workerGroupSpecs"]:
        [container] = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        workers += group["replicas"] * workers_that_fit(
            float(limits.get("nvidia.com/gpu", 0)), float(limits["cpu"]), imagenet.scaling
        )
    assert workers >= imagenet.scaling.num_workers
    for template in pod_templates(spec):
        [container] = template["spec"]["containers"]
        assert needed_weights(imagenet) <= fetched_weights(json.dumps(container["lifecycle"]))


def test_rayjob_runs_the_training_entry_point_with_a_valid_runtime_env():
    spec = read_manifest("RayJob")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    argv = shlex.split(spec["entrypoint"])
    assert argv[: len(ENTRY_POINT)] == ENTRY_POINT
    config = load_config(REPO / TRAIN_CONFIG, argv[len(ENTRY_POINT):])
    assert config.data.train.startswith("s3://") and config.run.storage_path.startswith("s3://")

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    RuntimeEnv(**runtime_env)
    assert f"colorray @ {runtime_env['working_dir']}" in runtime_env["pip"]
    assert runtime_env["env_vars"]


@pytest.mark.parametrize("path", [LAUNCHER, *MANIFESTS.values()], ids=lambda path: path.name)
def test_every_cluster_file_names_the_entry_point_and_the_image(path):
    text = path.read_text()
    assert " ".join(ENTRY_POINT) in text and IMAGE in text
