"""One real training step for every registered generator, so no model can be broken silently.

Each step goes through ``colorray.train.loop.train_step`` with the models and the
objective that training builds from the config (``build_models``, ``Objective``),
at 32x32 with small widths and no pretrained weights: forward, loss, backward,
optimizer step, then a validation metric. Every generator that predicts ab or
RGB is also trained one adversarial step against every registered critic.
"""

from __future__ import annotations

import pytest
import torch

from colorray import color
from colorray.config import config_from_dict
from colorray.losses.objective import Objective, check_losses
from colorray.metrics import image_metrics
from colorray.models import list_models, model_option_names, output_space, predict_ab
from colorray.train.loop import build_models, train_step
from colorray.train.optim import build_optimizer, build_scheduler
from colorray.train.stepping import Updater

SIZE = 32
CLASSES = {"indoor": 0, "outdoor": 1}
# Small options keep each step under a second or two; a model missing here trains at its defaults.
SMALL = {
    "attention_unet": {"ngf": 8, "num_downs": 5},
    "cnn": {"width": 8},
    "eccv16": {"width": 0.125},
    "eccv16_vgg19": {"width": 0.125},
    "fusion": {"width": 0.125},
    "rgb_cnn": {"width": 0.125},
    "unet": {"ngf": 8, "num_downs": 5},
}
LOSS_FOR_SPACE = {  # no ab prior here: the bins models train on plain (unweighted) cross-entropy
    "ab": {"terms": {"l1": 1.0}},
    "rgb": {"terms": {"l1": 1.0}},
    "bins": {"terms": {"rebalanced_ce": 1.0}, "options": {"rebalanced_ce": {"rebalance": False}}},
}
GENERATORS = [name for name in list_models() if output_space(name) != "critic"]
CRITICS = list_models(output="critic")
GAN_CASES = [(g, c) for g in GENERATORS if output_space(g) in ("ab", "rgb") for c in CRITICS]


def config_for(name: str, critic: str | None = None):
    options = dict(SMALL.get(name, {}))
    if "pretrained" in model_option_names(name):
        options["pretrained"] = "none"
    values = {
        "model": {"name": name, "options": options},
        "loss": LOSS_FOR_SPACE[output_space(name)],
        "data": {"image_size": SIZE, "batch_size": 2},
    }
    if critic is not None:
        values["gan"] = {"enabled": True, "discriminator": critic, "options": {"ndf": 8}}
    config = config_from_dict(values)
    check_losses(config, output_space(name))
    return config


def one_step(config, adversarial: bool):
    torch.manual_seed(0)
    device = torch.device("cpu")
    models = build_models(config, CLASSES, device)
    optimizers = {name: build_optimizer(model.parameters(), config.optim) for name, model in models.items()}
    schedulers = {name: build_scheduler(opt, config.optim, 1, 1) for name, opt in optimizers.items()}
    updater = Updater(config, models, optimizers, schedulers, device)
    before = {name: [p.detach().clone() for p in model.parameters()] for name, model in models.items()}
    rgb = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    L, ab = color.rgb_to_model_inputs(rgb)
    target = color.training_target(models["generator"].output_space, rgb, ab)
    labels = torch.tensor([0, 1])
    losses = train_step(models, updater, Objective(config, None, device), L, target, labels, adversarial)
    return models, before, losses, L, ab


def changed(model: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p.detach(), old) for p, old in zip(model.parameters(), before))


@pytest.mark.parametrize("name", GENERATORS)
def test_every_generator_trains_one_supervised_step(name):
    models, before, losses, L, ab = one_step(config_for(name), adversarial=False)
    assert torch.isfinite(losses["total"]), losses
    assert changed(models["generator"], before["generator"])
    generator = models["generator"].eval()
    with torch.no_grad():
        scores = image_metrics(L, predict_ab(generator, L), ab)
    assert torch.isfinite(scores["psnr"]).all() and torch.isfinite(scores["colorfulness_gap"]).all()


@pytest.mark.parametrize("name, critic", GAN_CASES)
def test_every_gan_generator_trains_one_adversarial_step(name, critic):
    models, before, losses, L, ab = one_step(config_for(name, critic), adversarial=True)
    assert {"critic", "adversarial", "l1", "total"} <= set(losses)
    assert all(torch.isfinite(value) for value in losses.values()), losses
    assert changed(models["generator"], before["generator"]) and changed(models["critic"], before["critic"])


def test_the_rgb_gan_critic_sees_l_and_rgb():
    models, *_ = one_step(config_for("rgb_cnn", "patchgan"), adversarial=True)
    assert models["critic"].in_channels == 4 and models["generator"].output_space == "rgb"
