"""Every registered loss: call convention, gradients, zero at a perfect prediction, options and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from colorray import color
from colorray.data.prior import PriorError, load_prior
from colorray.losses import (
    combined_generator_loss,
    create_loss,
    list_losses,
    loss_family,
)
from colorray.models.weights import PretrainedWeightsMissing
from colorray.registry import UnknownNameError

torch.manual_seed(0)


def normalized_batch(n: int = 2, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (L, pred_ab, true_ab), all normalized; pred_ab requires grad."""
    L = torch.rand(n, 1, size, size) * 2 - 1
    true_ab = (torch.rand(n, 2, size, size) * 2 - 1) * 0.6
    pred_ab = ((torch.rand(n, 2, size, size) * 2 - 1) * 0.6).requires_grad_()
    return L, pred_ab, true_ab


def gradient_is_finite_and_nonzero(loss: torch.Tensor, leaf: torch.Tensor) -> bool:
    loss.backward()
    return bool(torch.isfinite(loss) and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0)


@pytest.fixture(scope="module")
def prior() -> torch.Tensor:
    """Counts over the ab bins of a few random colors, with a heavy weight on gray."""
    bins = color.ab_bins()
    counts = color.ab_histogram(torch.randn(1, 2, 32, 32) * 25, bins)
    counts[color.nearest_bins(torch.zeros(1, 2, 1, 1), bins, 1)[0].item()] += 5000
    return counts


def test_registry_lists_every_family():
    assert set(list_losses()) >= {"l1", "mse", "smooth_l1", "tv", "color_weighted", "perceptual",
                                  "rebalanced_ce", "class_ce", "adversarial"}
    assert list_losses("bins") == ["rebalanced_ce"]
    assert loss_family("class_ce") == "class" and loss_family("adversarial") == "adversarial"
    loss = create_loss("l1")
    assert loss.family == "pixel" and loss.registry_name == "l1"


def test_unknown_loss_name_lists_known_names():
    with pytest.raises(UnknownNameError, match="unknown loss 'l3'.*l1, mse"):
        create_loss("l3")


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="no option 'alpha'"):
        create_loss("smooth_l1", alpha=1.0)


@pytest.mark.parametrize("name", ["l1", "mse", "smooth_l1"])
def test_elementwise_pixel_losses(name):
    loss = create_loss(name)
    L, pred_ab, true_ab = normalized_batch()
    assert gradient_is_finite_and_nonzero(loss(pred_ab, true_ab, L), pred_ab)
    assert loss(true_ab, true_ab, L).item() == 0.0
    assert torch.isfinite(loss(pred_ab.detach().bfloat16(), true_ab, L))


def test_pixel_losses_reject_mismatched_shapes():
    L, pred_ab, true_ab = normalized_batch()
    with pytest.raises(ValueError, match="one shape"):
        create_loss("l1")(pred_ab[..., :8, :8], true_ab, L)


def test_smooth_l1_beta_is_in_normalized_units():
    L, _, true_ab = normalized_batch()
    pred_ab = true_ab + 0.5
    assert create_loss("smooth_l1", beta=0.1)(pred_ab, true_ab, L).item() == pytest.approx(0.5 - 0.05)
    with pytest.raises(ValueError, match="beta > 0"):
        create_loss("smooth_l1", beta=0.0)


def test_total_variation_depends_only_on_the_prediction():
    loss = create_loss("tv")
    L, pred_ab, true_ab = normalized_batch()
    assert gradient_is_finite_and_nonzero(loss(pred_ab, true_ab, L), pred_ab)
    assert loss(pred_ab, true_ab, L).item() == pytest.approx(loss(pred_ab, torch.zeros_like(true_ab), L).item())
    assert loss(torch.full_like(true_ab, 0.3), true_ab, L).item() == 0.0


def test_color_weighted_requires_a_prior():
    with pytest.raises(ValueError, match=r"python -m colorray.prior SHARDS prior.npy.*loss.prior"):
        create_loss("color_weighted")
    with pytest.raises(ValueError, match="ab prior"):
        create_loss("color_weighted", prior="")
    with pytest.raises(PriorError, match="ab prior file not found"):
        create_loss("color_weighted", prior="/nonexistent/prior.npy")


@pytest.mark.parametrize("base", ["l1", "mse"])
def test_color_weighted_loss_weighs_rare_colors_more(prior, base):
    loss = create_loss("color_weighted", prior=prior, base=base)
    L, pred_ab, true_ab = normalized_batch()
    assert gradient_is_finite_and_nonzero(loss(pred_ab, true_ab, L), pred_ab)
    assert loss(true_ab, true_ab, L).item() == 0.0
    # Left half gray (the common color), right half saturated red (rare); the same error on either half.
    true_ab = torch.zeros(1, 2, 8, 8)
    true_ab[:, 0, :, 4:] = 0.6
    error_on_gray, error_on_red = true_ab.clone(), true_ab.clone()
    error_on_gray[:, 1, :, :4] += 0.2
    error_on_red[:, 1, :, 4:] += 0.2
    assert loss(error_on_red, true_ab, L[:1, :, :8, :8]) > 5 * loss(error_on_gray, true_ab, L[:1, :, :8, :8])


def test_color_weighted_reads_a_npy_prior(tmp_path, prior):
    path = tmp_path / "prior.npy"
    np.save(path, prior.numpy())
    L, pred_ab, true_ab = normalized_batch()
    from_file = create_loss("color_weighted", prior=str(path))(pred_ab, true_ab, L)
    from_tensor = create_loss("color_weighted", prior=prior)(pred_ab, true_ab, L)
    assert from_file.item() == pytest.approx(from_tensor.item())
    with pytest.raises(ValueError, match="base must be one of l1, mse"):
        create_loss("color_weighted", prior=prior, base="huber")


def test_load_prior_rejects_bad_priors(tmp_path):
    negative = torch.ones(color.ab_bins().shape[0])
    negative[0] = -1.0
    with pytest.raises(PriorError, match="non-negative"):
        load_prior(negative)
    (tmp_path / "bad.npy").write_text("not an array")
    with pytest.raises(ValueError, match="not a .npy array"):
        load_prior(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="shape"):
        create_loss("color_weighted", prior=torch.ones(10))


def peaked_logits(true_ab_norm: torch.Tensor, size: int, height: float = 4.0) -> torch.Tensor:
    """Logits at ``size`` peaked at the nearest bin of the pooled target."""
    bins = color.ab_bins()
    target = color.denormalize_ab(F.adaptive_avg_pool2d(true_ab_norm, size))
    nearest = color.nearest_bins(target, bins, 1)[0]
    return torch.zeros(true_ab_norm.shape[0], bins.shape[0], size, size).scatter_(1, nearest, height)


@pytest.mark.parametrize("use_prior", [False, True])
def test_rebalanced_ce_prefers_the_true_bin(prior, use_prior):
    loss = create_loss("rebalanced_ce", prior=prior) if use_prior else create_loss("rebalanced_ce", rebalance=False)
    assert loss.family == "bins"
    L, _, true_ab = normalized_batch(size=16)
    uniform = torch.zeros(2, color.ab_bins().shape[0], 4, 4, requires_grad=True)
    uniform_loss = loss(uniform, true_ab, L)
    assert gradient_is_finite_and_nonzero(uniform_loss, uniform)
    assert loss(peaked_logits(true_ab, 4), true_ab, L) < uniform_loss
    if not use_prior:
        assert uniform_loss.item() == pytest.approx(math.log(color.ab_bins().shape[0]), rel=1e-5)


def test_rebalanced_ce_without_a_prior_refuses_to_fall_back_to_plain_cross_entropy(prior):
    with pytest.raises(ValueError, match=r"'rebalanced_ce' rebalances by an ab prior and none was given: .*"
                                         r"python -m colorray.prior.*rebalanced_ce.rebalance=false"):
        create_loss("rebalanced_ce")
    L, _, true_ab = normalized_batch(size=16)
    logits = torch.randn(2, color.ab_bins().shape[0], 4, 4)
    plain = create_loss("rebalanced_ce", prior=prior, rebalance=False)(logits, true_ab, L)
    assert plain.item() == pytest.approx(create_loss("rebalanced_ce", rebalance=False)(logits, true_ab, L).item())
    assert plain.item() != pytest.approx(create_loss("rebalanced_ce", prior=prior)(logits, true_ab, L).item())


def test_rebalanced_ce_rejects_logits_of_the_wrong_size():
    L, _, true_ab = normalized_batch()
    with pytest.raises(ValueError, match=r"logits \(N, 262, h, w\)"):
        create_loss("rebalanced_ce", rebalance=False)(torch.zeros(2, 10, 4, 4), true_ab, L)


def test_class_ce_ignores_unlabeled_images():
    loss = create_loss("class_ce")
    logits = torch.randn(3, 5, requires_grad=True)
    labels = torch.tensor([-1, 2, 4])
    expected = F.cross_entropy(logits[1:], labels[1:])
    value = loss(logits, labels)
    assert value.item() == pytest.approx(expected.item())
    assert gradient_is_finite_and_nonzero(value, logits)
    assert logits.grad[0].abs().sum() == 0
    unlabeled = loss(logits, torch.full((3,), -1))
    assert unlabeled.item() == 0.0 and unlabeled.requires_grad
    unlabeled.backward()


@pytest.mark.parametrize("mode", ["vanilla", "lsgan"])
def test_adversarial_modes(mode):
    loss = create_loss("adversarial", mode=mode)
    logits = torch.randn(2, 1, 6, 6, requires_grad=True)
    assert gradient_is_finite_and_nonzero(loss(logits, True), logits)
    confident_real = torch.full((2, 1, 6, 6), 8.0 if mode == "vanilla" else 1.0)
    assert loss(confident_real, True).item() < 1e-3
    assert loss(confident_real, False).item() > 0.9
    if mode == "lsgan":
        assert loss(logits, False).item() == pytest.approx(logits.detach().pow(2).mean().item())
    else:
        expected = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
        assert loss(logits, False).item() == pytest.approx(expected.item())


def test_adversarial_rejects_unknown_mode():
    with pytest.raises(ValueError, match="vanilla, lsgan"):
        create_loss("adversarial", mode="wgan")


def test_combined_generator_loss():
    adversarial, l1, perceptual = torch.tensor(0.7), torch.tensor(0.02), torch.tensor(3.0)
    assert combined_generator_loss(adversarial, l1).item() == pytest.approx(0.7 + 100 * 0.02)
    mixed = combined_generator_loss(adversarial, l1, perceptual, lam=10.0, gamma=0.25)
    assert mixed.item() == pytest.approx(0.25 * (0.7 + 10 * 0.02) + 0.75 * 3.0)
    with pytest.raises(ValueError, match="none was given"):
        combined_generator_loss(adversarial, l1, None, gamma=0.5)


def test_perceptual_without_vgg_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsMissing, match="vgg19-dcbb9e9d.pth"):
        create_loss("perceptual")


@pytest.fixture(scope="module")
def vgg19_checkpoint(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    """torchvision's VGG-19 trunk in its checkpoint layout (``features.*``; the classifier left out)."""
    features = torchvision.models.vgg19().features
    state = {f"features.{key}": value for key, value in features.state_dict().items()}
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return str(path), state


def vgg_mse(state: dict[str, torch.Tensor], relu_index: int, L, pred_ab, true_ab) -> float:
    """The perceptual loss computed independently: torchvision's VGG-19 with ``state``, MSE after one ReLU."""
    trunk = torchvision.models.vgg19().features[: relu_index + 1]
    trunk.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                           if int(k.split(".")[1]) <= relu_index})
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        features = [trunk((color.model_outputs_to_rgb(L, ab) - mean) / std) for ab in (pred_ab, true_ab)]
    return F.mse_loss(*features).item()


def test_perceptual_loads_vgg19_from_the_file(vgg19_checkpoint):
    path, state = vgg19_checkpoint
    loss = create_loss("perceptual", pretrained=path, layers=["relu1_2", "relu2_2"], criterion="l1")
    assert torch.equal(loss.features.body[7].weight, state["features.7.weight"])
    assert len(loss.features.body) == 9  # built only up to relu2_2
    loss.train()
    assert not loss.features.body.training
    assert not any(p.requires_grad for p in loss.parameters())
    L, pred_ab, true_ab = normalized_batch(size=24)
    assert gradient_is_finite_and_nonzero(loss(pred_ab, true_ab, L), pred_ab)
    assert loss(true_ab, true_ab, L).item() == 0.0


def test_perceptual_default_layers_run(vgg19_checkpoint):
    loss = create_loss("perceptual", pretrained=vgg19_checkpoint[0])
    L, pred_ab, true_ab = normalized_batch(n=1, size=32)
    assert gradient_is_finite_and_nonzero(loss(pred_ab, true_ab, L), pred_ab)


def test_perceptual_rejects_partial_files_and_unknown_layers(tmp_path, vgg19_checkpoint):
    _, state = vgg19_checkpoint
    shallow = {k: v for k, v in state.items() if int(k.split(".")[1]) < 9}
    path = tmp_path / "shallow.pth"
    torch.save(shallow, path)
    loss = create_loss("perceptual", pretrained=str(path), layers="relu2_2")
    L, pred_ab, true_ab = normalized_batch(n=1, size=16)
    assert loss(pred_ab, true_ab, L).item() == pytest.approx(vgg_mse(state, 8, L, pred_ab, true_ab), rel=1e-5)
    with pytest.raises(ValueError, match="lack 2 tensors.*features.10.weight"):
        create_loss("perceptual", pretrained=str(path), layers=["relu3_1"])
    with pytest.raises(ValueError, match="relu1_1"):
        create_loss("perceptual", pretrained=str(path), layers=["relu9_9"])


def test_perceptual_options_are_accepted_for_the_gan_mix_only():
    from colorray.config import config_from_dict
    from colorray.losses.objective import check_losses

    options = {"perceptual": {"layers": ["relu3_3"], "pretrained": "none"}}
    mixed = config_from_dict({"gan": {"enabled": True, "gamma": 0.5}, "loss": {"options": options}})
    check_losses(mixed, "ab")  # the GAN objective's perceptual term reads loss.options.perceptual
    plain = config_from_dict({"loss": {"options": options}})
    with pytest.raises(ValueError, match="loss.options names 'perceptual', which is not in loss.terms"):
        check_losses(plain, "ab")
