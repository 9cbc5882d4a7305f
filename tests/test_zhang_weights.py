"""Zhang et al.'s released ECCV16 weights (colorization_release_v2-9b330a0b.pth) wherever a model is taken.

The file is never downloaded here: the tests build a state dict with the port's key
names and shapes from a reference network written after richzhang/colorization's
``colorizers/eccv16.py`` (``ECCVGenerator``), with random weights and 313 bin centres
in ``model_out``, and check that colorray computes exactly what that network does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from colorray import color, colorize
from colorray.config import ConfigError, config_from_dict
from colorray.export import load_generator, read_export, save_generator
from colorray.inference import Colorizer
from colorray.losses.objective import Objective
from colorray.models import create_model, predict_ab
from colorray.models.weights import PretrainedWeightsMissing
from colorray.train import preflight
from colorray.train.loop import train_step
from colorray.train.optim import build_optimizer, build_scheduler
from colorray.train.stepping import Updater


def convs(cin: int, cout: int, count: int, stride: int = 1, dilation: int = 1, norm: bool = True) -> nn.Sequential:
    """One block of the port: ``count`` x (3x3 conv + ReLU), the last conv strided, then BatchNorm."""
    layers: list[nn.Module] = []
    for index in range(count):
        last = index == count - 1
        layers += [nn.Conv2d(cin if index == 0 else cout, cout, 3, stride=stride if last else 1, padding=dilation,
                             dilation=dilation), nn.ReLU(True)]
    return nn.Sequential(*layers, *([nn.BatchNorm2d(cout)] if norm else []))


class ReferenceECCV(nn.Module):
    """The port's ECCVGenerator: the same modules under the same names, and its forward."""

    def __init__(self, centres: torch.Tensor):
        super().__init__()
        self.model1, self.model2 = convs(1, 64, 2, 2), convs(64, 128, 2, 2)
        self.model3, self.model4 = convs(128, 256, 3, 2), convs(256, 512, 3)
        self.model5, self.model6 = convs(512, 512, 3, dilation=2), convs(512, 512, 3, dilation=2)
        self.model7 = convs(512, 512, 3)
        self.model8 = nn.Sequential(nn.ConvTranspose2d(512, 256, 4, stride=2, padding=1), nn.ReLU(True),
                                    *convs(256, 256, 2, norm=False), nn.Conv2d(256, 313, 1))
        self.model_out = nn.Conv2d(313, 2, 1, bias=False)
        self.model_out.weight.data = (centres.T / 110.0).reshape(2, 313, 1, 1)

    def logits(self, L: torch.Tensor) -> torch.Tensor:
        x = (L - 50.0) / 100.0
        for block in (self.model1, self.model2, self.model3, self.model4, self.model5, self.model6, self.model7,
                      self.model8):
            x = block(x)
        return x

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        ab_norm = self.model_out(torch.softmax(self.logits(L), dim=1))
        return 110.0 * F.interpolate(ab_norm, scale_factor=4, mode="bilinear")


def zhang_centres() -> torch.Tensor:
    """313 centres on the 10-unit grid: colorray's 262 in-gamut bins and 51 more, as Zhang et al.'s table extends ours."""
    ours = color.ab_bins()
    grid = torch.cartesian_prod(torch.arange(-110.0, 111.0, 10.0), torch.arange(-110.0, 111.0, 10.0))
    extra = [c for c in grid if not (ours == c).all(1).any()]
    extra.sort(key=lambda c: float(c.norm()))
    return torch.cat([ours, torch.stack(extra[: 313 - len(ours)])])


@pytest.fixture(scope="module")
def reference() -> ReferenceECCV:
    torch.manual_seed(0)
    model = ReferenceECCV(zhang_centres()).eval()
    for module in model.modules():  # BatchNorm statistics as a trained network has them
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def release(reference, tmp_path_factory):
    """The release file as the port saved it (without BatchNorm's step counters)."""
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert {"model1.0.weight", "model8.6.weight", "model_out.weight"} <= set(state)
    assert state["model8.6.weight"].shape == (313, 256, 1, 1) and state["model_out.weight"].shape == (2, 313, 1, 1)
    path = tmp_path_factory.mktemp("zhang") / "colorization_release_v2-9b330a0b.pth"
    torch.save(state, path)
    return path


def l_batch(size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return color.rgb_to_model_inputs(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8,
                                                   generator=generator))


@torch.no_grad()
def test_eccv16_from_the_release_computes_what_the_port_computes(reference, release):
    model = create_model("eccv16", pretrained=str(release)).eval()
    assert model.registry_options == {"pretrained": str(release), "bins": "zhang"}
    torch.testing.assert_close(model.bins, zhang_centres())
    L_norm, _ = l_batch()
    L = color.denormalize_l(L_norm)
    torch.testing.assert_close(model(L_norm), reference.logits(L), rtol=1e-4, atol=1e-4)
    # the port decodes with the mean (softmax -> model_out); colorray's temperature 1 is the same
    ab = color.denormalize_ab(predict_ab(model, L_norm, temperature=1.0))
    torch.testing.assert_close(ab, reference(L), rtol=1e-4, atol=1e-3)


def test_the_release_file_is_a_model_for_colorize_evaluate_and_serve(release, tmp_path):
    payload, _ = read_export(release)  # what serve --model checks before it starts
    assert payload["model"] == "eccv16" and payload["options"] == {"bins": "zhang"}
    model, info = load_generator(release)
    assert info.image_size == 256 and info.temperature == 0.38 and model.bins.shape == (313, 2)
    photo = np.asarray(Image.new("RGB", (48, 40), (90, 120, 60)))
    assert Colorizer.from_path(release).colorize([photo])[0].shape == photo.shape
    Image.fromarray(photo).save(tmp_path / "photo.png")
    assert colorize.main([str(release), str(tmp_path / "photo.png"), "--out", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "photo.png").size == (48, 40)


@torch.no_grad()
def test_a_fine_tuned_export_keeps_zhangs_bins_and_input(release, tmp_path):
    model = create_model("eccv16", pretrained=str(release)).eval()
    save_generator(tmp_path / "generator.pt", model, 256)
    loaded, info = load_generator(tmp_path / "generator.pt")
    assert info.options == {"pretrained": str(release), "bins": "zhang"}
    L_norm, _ = l_batch()
    torch.testing.assert_close(loaded(L_norm), model(L_norm))


def test_fine_tuning_from_the_release_trains_on_its_313_bins(release):
    config = config_from_dict({"model": {"name": "eccv16", "options": {"pretrained": str(release)}},
                               "loss": {"terms": {"rebalanced_ce": 1.0}}, "data": {"image_size": 32}})
    model = create_model("eccv16", pretrained=str(release))
    models = {"generator": model}
    optimizers = {"generator": build_optimizer(model.parameters(), config.optim)}
    updater = Updater(config, models, optimizers, {"generator": build_scheduler(optimizers["generator"],
                                                                                  config.optim, 1, 1)}, torch.device("cpu"))
    prior = torch.rand(color.ab_bins().shape[0])  # a prior over colorray's 262 bins, moved onto the 313
    objective = Objective(config, prior, torch.device("cpu"), model.bins)
    loss = objective.terms["rebalanced_ce"][1]
    assert loss.bins.shape == (313, 2) and loss.class_weights.shape == (313,)
    before = model.head[4].weight.detach().clone()
    L, ab = l_batch()
    losses = train_step(models, updater, objective, L, ab, torch.full((2,), -1), False)
    assert torch.isfinite(losses["total"]) and not torch.equal(before, model.head[4].weight)


def test_a_prior_moves_onto_zhangs_bins_count_for_count():
    prior = torch.arange(1.0, color.ab_bins().shape[0] + 1)
    moved = color.prior_on_bins(prior, zhang_centres())
    assert moved.shape == (313,) and moved.sum() == prior.sum()
    torch.testing.assert_close(moved[: prior.shape[0]], prior.double())  # the 262 are the table's first rows here


def test_bad_release_use_is_named(release, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(PretrainedWeightsMissing, match="colorization_release_v2-9b330a0b.pth"):
        create_model("eccv16", pretrained="zhang")  # downloads are off in tests
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not Zhang et al.'s released ECCV16"):
        create_model("eccv16", pretrained=str(tmp_path / "other.pth"))
    with pytest.raises(ValueError, match="width 1.0"):
        create_model("eccv16", width=0.5, pretrained=str(release))
    with pytest.raises(ConfigError, match="bins=zhang takes Zhang et al.'s 313 bin centres"):
        preflight.check(config_from_dict({"model": {"name": "eccv16", "options": {"bins": "zhang"}},
                                          "loss": {"terms": {"rebalanced_ce": 1.0}}}))
