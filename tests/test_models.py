"""Tests of the model zoo: every registered model runs forward and backward at any size, in its output space.

Small option values keep the suite fast on 2 CPU cores; the paper-size models
are only built, and their parameter counts checked against docs/models.md.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs as vgg_configs
from torchvision.models.vgg import make_layers as make_vgg_layers

from colorray import color
from colorray.models import (
    create_model,
    list_models,
    predict_ab,
    split_class_logits,
    weights,
)
from colorray.models.backbones import ResNetEncoder
from colorray.registry import UnknownNameError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"
NUM_BINS = color.ab_bins().shape[0]
SIZES = [(64, 64), (70, 90)]

# name -> [(small options, (min, max) parameter count)]: what the forward/backward tests build.
SMALL_VARIANTS = {
    "cnn": [({"width": 8}, (20_000, 23_000))],
    "unet": [({"ngf": 8, "num_downs": 6}, (440_000, 480_000))],
    "unet_rgb": [({"ngf": 8, "num_downs": 6}, (440_000, 480_000))],
    "attention_unet": [
        ({"ngf": 8, "num_downs": 6}, (450_000, 490_000)),
        ({"encoder": "resnet18"}, (14_000_000, 15_000_000)),
    ],
    "resnet_unet": [({"depth": 18}, (14_000_000, 15_000_000))],
    "eccv16": [({"width": 0.125}, (490_000, 540_000))],
    "eccv16_vgg19": [({"width": 0.125}, (11_000_000, 11_500_000))],
    "fusion": [({"width": 0.125, "num_classes": 10}, (640_000, 690_000))],
    "resnet_regressor": [({}, (900_000, 1_000_000))],
    "rgb_cnn": [({"width": 0.125}, (260_000, 290_000))],
    "patchgan": [
        ({"ndf": 8}, (42_000, 47_000)),
        ({"ndf": 8, "in_channels": 4, "spectral_norm": True}, (42_000, 47_000)),
    ],
}

CASES = [
    pytest.param(name, options, expected, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in options.items()) or 'default'}")
    for name in list_models()
    for options, expected in SMALL_VARIANTS.get(name, [({}, None)])
]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_conv(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def model_input(model: nn.Module, height: int, width: int) -> torch.Tensor:
    L = torch.rand(2, 1, height, width) * 2 - 1
    if model.output_space != "critic":
        return L
    color_channels = model.in_channels - 1
    return torch.cat([L, torch.rand(2, color_channels, height, width) * 2 - 1], dim=1)


def expected_shape(model: nn.Module, height: int, width: int) -> tuple[int, ...]:
    if model.output_space == "ab":
        return (2, 2, height, width)
    if model.output_space == "rgb":
        return (2, 3, height, width)
    if model.output_space == "bins":
        return (2, NUM_BINS, math.ceil(height / 4), math.ceil(width / 4))
    return (2, 1, height // 8 - 2, width // 8 - 2)  # 70x70 PatchGAN: three stride-2 convs, two stride-1 4x4 convs


def documented_defaults() -> dict[str, tuple[float, float]]:
    """Registry name -> (min, max) default parameter count from the table in docs/models.md."""
    ranges = {}
    for line in DOCS.read_text().splitlines():
        row = re.match(r"\|\s*`(\w+)`\s*\|", line)
        bounds = re.search(r"([\d.]+)\s*[–-]\s*([\d.]+)\s*M\s*\|\s*$", line)
        if row and bounds:
            ranges[row.group(1)] = (float(bounds.group(1)) * 1e6, float(bounds.group(2)) * 1e6)
    return ranges


@pytest.mark.parametrize("name, options, expected", CASES)
def test_forward_backward_at_any_size(name, options, expected):
    assert expected is not None, f"add small options and a parameter range for '{name}' to SMALL_VARIANTS"
    torch.manual_seed(0)
    model = create_model(name, **options)
    assert model.registry_name == name
    assert expected[0] <= count_parameters(model) <= expected[1]
    for height, width in SIZES:
        model.zero_grad()
        output = model(model_input(model, height, width))
        prediction, class_logits = split_class_logits(output)
        assert prediction.shape == expected_shape(model, height, width)
        assert torch.isfinite(prediction).all()
        if model.output_space == "ab":
            assert prediction.abs().max() <= 1.0
        if model.output_space == "rgb":
            assert 0.0 <= prediction.min() and prediction.max() <= 1.0
        loss = prediction.mean()
        if class_logits is not None:
            assert class_logits.shape == (2, options["num_classes"])
            loss = loss + class_logits.mean()
        loss.backward()
        grads = [p.grad for p in first_conv(model).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), "no gradient reached the first layer"


def test_fusion_returns_ab_and_class_logits():
    model = create_model("fusion", width=0.125, num_classes=7)
    ab, class_logits = model(torch.zeros(1, 1, 33, 47))
    assert ab.shape == (1, 2, 33, 47) and class_logits.shape == (1, 7)


def test_default_parameter_counts_match_the_docs():
    ranges = documented_defaults()
    assert set(ranges) == set(list_models()), "docs/models.md must have one row per registered model"
    color.ab_bins()  # cached on the CPU: the bin models need it, and the meta device cannot build it
    for name in list_models():
        low, high = ranges[name]
        with torch.device("meta"):  # shapes only: no memory, no initialization
            model = create_model(name)
        assert low <= count_parameters(model) <= high, name


def test_eccv16_predicts_in_gamut_ab_at_full_resolution():
    torch.manual_seed(0)
    model = create_model("eccv16", width=0.125).eval()
    L = torch.rand(1, 1, 70, 90) * 2 - 1
    with torch.no_grad():
        ab = predict_ab(model, L)
    assert ab.shape == (1, 2, 70, 90)
    assert ab.abs().max() <= 1.0  # |ab| <= 110 Lab units


def test_unknown_name_lists_known_models():
    with pytest.raises(UnknownNameError, match="unknown model 'vgg_unet'.*eccv16.*unet"):
        create_model("vgg_unet")


def test_unknown_option_is_a_clear_type_error():
    with pytest.raises(TypeError, match="model 'unet' has no option 'depth'; its options: ngf, num_downs, dropout"):
        create_model("unet", depth=18)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("resnet_unet", {"depth": 50}, "resnet depth must be one of"),
        ("attention_unet", {"encoder": "vgg"}, "encoder must be one of plain, resnet18, resnet34"),
        ("attention_unet", {"encoder": "resnet18", "ngf": 32}, "apply only to encoder='plain'"),
        ("attention_unet", {"pretrained": "imagenet"}, "pretrained weights need encoder="),
        ("eccv16", {"width": 0}, "width must be a positive multiplier"),
        ("unet", {"num_downs": 1}, "needs num_downs >= 2"),
        ("fusion", {"num_classes": 0}, "num_classes >= 1"),
    ],
)
def test_bad_option_values_are_named(name, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        create_model(name, **options)


def test_wrong_input_channels_are_named():
    with pytest.raises(ValueError, match=r"patchgan expects input of shape \(N, 3, H, W\), got \(1, 4, 64, 64\)"):
        create_model("patchgan", ndf=8)(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"unet expects input of shape \(N, 1, H, W\)"):
        create_model("unet", ngf=4, num_downs=4)(torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize(
    "name, options, arch",
    [
        ("resnet_unet", {}, "resnet18"),
        ("resnet_unet", {"depth": 34}, "resnet34"),
        ("attention_unet", {"encoder": "resnet34"}, "resnet34"),
        ("resnet_regressor", {}, "resnet18"),
        ("eccv16_vgg19", {"width": 0.125}, "vgg19"),
    ],
)
def test_missing_pretrained_weights_name_the_expected_file(tmp_path, monkeypatch, name, options, arch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / weights.TORCHVISION_FILES[arch]
    assert weights.expected_path(arch) == expected
    with pytest.raises(weights.PretrainedWeightsMissing, match=re.escape(str(expected))):
        create_model(name, pretrained="imagenet", **options)


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize(
    "name, options",
    [("resnet_unet", {}), ("attention_unet", {"encoder": "resnet18"}), ("resnet_regressor", {})],
)
def test_resnet_weights_load_from_a_path(resnet18_checkpoint, name, options):
    path, saved = resnet18_checkpoint
    model = create_model(name, pretrained=str(path), **options)
    encoder = next(m for m in model.modules() if isinstance(m, ResNetEncoder))
    assert encoder.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.equal(encoder.conv1.weight, saved["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(encoder.layer2[0].conv1.weight, saved["layer2.0.conv1.weight"])
    assert torch.equal(encoder.bn1.running_var, saved["bn1.running_var"])


def test_weights_of_another_architecture_are_refused(resnet18_checkpoint):
    path, _ = resnet18_checkpoint
    with pytest.raises(ValueError, match=f"the resnet34 weights '{re.escape(str(path))}' do not fit"):
        create_model("resnet_unet", depth=34, pretrained=str(path))


def test_vgg19_weights_load_from_a_path(tmp_path):
    torch.manual_seed(2)
    features = make_vgg_layers(vgg_configs["E"])
    saved = {f"features.{key}": value for key, value in features.state_dict().items()}
    path = tmp_path / "vgg19.pth"
    torch.save(saved, path)
    trunk = create_model("eccv16_vgg19", pretrained=str(path), width=0.125).trunk
    assert torch.equal(trunk[0].weight, saved["features.0.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(trunk[25].weight, saved["features.25.weight"])  # conv4_4
