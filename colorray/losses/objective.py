"""Training objectives: the losses of a ``TrainConfig`` built from the loss registry and combined.

- Supervised mode: ``sum(weight * term)`` over ``loss.terms`` (pixel losses for
  ab/RGB models, ``rebalanced_ce`` for bin models), plus the fusion net's
  classification term ``loss.class_weight * CE`` when labels exist.
- GAN mode: the critic's loss ``(adv(D(real), 1) + adv(D(fake), 0)) / 2`` and the
  generator's ``gamma * (adv(D(fake), 1) + lambda * L1) + (1 - gamma) * perceptual``
  (the HASHeD study's mix; pix2pix is gamma = 1, lambda = 100). During
  ``gan.pretrain_epochs`` the generator trains on the supervised terms alone.
"""

from __future__ import annotations

from typing import Any

import torch

from colorray.config import TrainConfig
from colorray.losses import combined_generator_loss, create_loss, loss_family

SPACE_FAMILIES = {"ab": {"pixel"}, "bins": {"bins"}, "rgb": {"pixel"}}
RGB_SAFE_LOSSES = {"l1", "mse", "smooth_l1", "tv", "perceptual"}
PRIOR_LOSSES = {"color_weighted", "rebalanced_ce"}


def loss_options(config: TrainConfig, name: str, prior: torch.Tensor | None,
                 bins: torch.Tensor | None = None) -> dict[str, Any]:
    options = dict(config.loss.options.get(name, {}))
    if name in PRIOR_LOSSES and prior is not None:
        options.setdefault("prior", prior)
    if bins is not None and loss_family(name) == "bins":
        options.setdefault("bins", bins)  # the generator's own bins (Zhang et al.'s 313 or ab_bins())
    return options


def check_losses(config: TrainConfig, output_space: str) -> None:
    """Reject loss terms that do not exist or do not fit the model's output space."""
    if not config.loss.terms:
        raise ValueError("loss.terms is empty: name at least one loss, e.g. loss.terms={l1: 1.0}")
    for name, weight in config.loss.terms.items():
        family = loss_family(name)
        if family not in SPACE_FAMILIES[output_space]:
            raise ValueError(
                f"loss '{name}' ({family} loss) does not fit model '{config.model.name}', "
                f"which predicts {output_space}"
            )
        if output_space == "rgb" and name not in RGB_SAFE_LOSSES:
            raise ValueError(f"loss '{name}' works on ab; RGB models take {', '.join(sorted(RGB_SAFE_LOSSES))}")
        if weight < 0:
            raise ValueError(f"loss.terms.{name} must be >= 0, got {weight}")
    gan_perceptual = config.gan.enabled and config.gan.gamma < 1  # the GAN objective's own perceptual term
    for name in config.loss.options:
        if name not in config.loss.terms and not (name == "perceptual" and gan_perceptual):
            raise ValueError(f"loss.options names '{name}', which is not in loss.terms "
                             "(perceptual options also apply in GAN mode with gan.gamma < 1)")


class Objective:
    def __init__(self, config: TrainConfig, prior: torch.Tensor | None, device: torch.device,
                 bins: torch.Tensor | None = None):
        self.config = config
        self.terms = {
            name: (weight, create_loss(name, **loss_options(config, name, prior, bins)).to(device))
            for name, weight in config.loss.terms.items()
        }
        self.class_loss = create_loss("class_ce").to(device)
        gan = config.gan
        if gan.enabled:
            self.adversarial = create_loss("adversarial", mode=gan.mode).to(device)
            self.l1 = create_loss("l1").to(device)
            self.perceptual = (
                create_loss("perceptual", **config.loss.options.get("perceptual", {})).to(device)
                if gan.gamma < 1
                else None
            )

    def supervised(
        self, prediction: torch.Tensor, target: torch.Tensor, L: torch.Tensor, class_logits=None, labels=None
    ) -> dict[str, torch.Tensor]:
        losses = {name: loss(prediction, target, L) for name, (_, loss) in self.terms.items()}
        total = sum(self.terms[name][0] * value for name, value in losses.items())
        if class_logits is not None and labels is not None:
            losses["class_ce"] = self.class_loss(class_logits, labels)
            total = total + self.config.loss.class_weight * losses["class_ce"]
        losses["total"] = total
        return losses

    def generator(
        self, prediction: torch.Tensor, target: torch.Tensor, L: torch.Tensor, critic_fake: torch.Tensor,
        class_logits=None, labels=None,
    ) -> dict[str, torch.Tensor]:
        gan = self.config.gan
        losses = {"adversarial": self.adversarial(critic_fake, True), "l1": self.l1(prediction, target, L)}
        if self.perceptual is not None:
            losses["perceptual"] = self.perceptual(prediction, target, L)
        total = combined_generator_loss(
            losses["adversarial"], losses["l1"], losses.get("perceptual"), lam=gan.lambda_l1, gamma=gan.gamma
        )
        if class_logits is not None and labels is not None:
            losses["class_ce"] = self.class_loss(class_logits, labels)
            total = total + self.config.loss.class_weight * losses["class_ce"]
        losses["total"] = total
        return losses

    def critic(self, critic_real: torch.Tensor, critic_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        real = self.adversarial(critic_real, True)
        fake = self.adversarial(critic_fake, False)
        return {"critic_real": real, "critic_fake": fake, "critic": 0.5 * (real + fake)}
