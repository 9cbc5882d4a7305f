"""Image-quality metrics of colorization, as pure batched torch functions.

Every metric returns one value per image, shape (N,). RGB inputs are sRGB
floats in 0..1 of shape (N, 3, H, W), reconstructed from the true L and the
predicted ab (``colorray.color.model_outputs_to_rgb``); they are rounded to
uint8 values (data range 255) before any RGB metric, as saved images would be.
The ab metrics (distance, accuracy within a threshold, AUC, optionally
rebalanced by per-pixel weights from ``colorray.color.pixel_rebalance_weights``)
take ab in Lab units (N, 2, H, W). LPIPS is only ever computed with real
pretrained AlexNet weights (loaded through ``colorray.models.weights``); without
them it is reported as unavailable. FID (``InceptionFeatures`` +
``frechet_distance``), a number per set of images that the evaluation harness
reports, is only computed with real Inception v3 weights; without them it is
reported as skipped.

``image_metrics`` is the one entry point of training validation and the
evaluation harness: it takes the normalized model tensors (L, predicted ab,
true ab) and returns every metric per image; ``summarize`` turns those values
into means with 95% confidence intervals. The protocol is written down in
``docs/metrics.md``.

Also here: the model-selection rule shared by training's export, Tune's
``best/`` and the loading of a run folder (``resolve_selection``,
``select_best``, and ``color_score``, the default when LPIPS is unavailable).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Mapping, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from colorray import color
from colorray.models import weights
from colorray.models.weights import PretrainedWeightsMissing

log = logging.getLogger(__name__)

ACCURACY_THRESHOLDS = (2.5, 5.0, 10.0, 20.0)
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COLOR_SCORE_DB_PER_CF = 0.5  # dB of PSNR that one unit of colorfulness gap costs in color_score (docs/metrics.md)
AUTO = "auto"
HIGHER_IS_BETTER = {"psnr", "ssim", "auc", "auc_rebalanced", "color_score"}  # and every acc_t
LOWER_IS_BETTER = {"mse", "mae", "lpips", "colorfulness_gap", "fid"}
Candidate = TypeVar("Candidate")


def _check_pair(pred: torch.Tensor, true: torch.Tensor, channels: int, what: str) -> None:
    if pred.ndim != 4 or pred.shape[1] != channels or pred.shape != true.shape:
        raise ValueError(
            f"{what} images must both have shape (N, {channels}, H, W), got {tuple(pred.shape)} and {tuple(true.shape)}"
        )


def to_uint8_range(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB floats 0..1 to the float64 values 0..255 of their uint8 rounding."""
    return (rgb.detach().double().clamp(0.0, 1.0) * DATA_RANGE).round()


def mse(pred_rgb: torch.Tensor, true_rgb: torch.Tensor) -> torch.Tensor:
    """Mean squared error on uint8-range RGB (``skimage.metrics.mean_squared_error``)."""
    _check_pair(pred_rgb, true_rgb, 3, "RGB")
    return (to_uint8_range(pred_rgb) - to_uint8_range(true_rgb)).pow(2).flatten(1).mean(1)


def mae(pred_rgb: torch.Tensor, true_rgb: torch.Tensor) -> torch.Tensor:
    """Mean absolute error on uint8-range RGB."""
    _check_pair(pred_rgb, true_rgb, 3, "RGB")
    return (to_uint8_range(pred_rgb) - to_uint8_range(true_rgb)).abs().flatten(1).mean(1)


def psnr(pred_rgb: torch.Tensor, true_rgb: torch.Tensor) -> torch.Tensor:
    """PSNR in dB on uint8-range RGB, data range 255; ``inf`` for identical images."""
    return 10.0 * torch.log10(DATA_RANGE**2 / mse(pred_rgb, true_rgb))


def ssim(pred_rgb: torch.Tensor, true_rgb: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over channels, equal to ``skimage.metrics.structural_similarity``.

    scikit-image's defaults on uint8 images: a 7x7 uniform window, K1 0.01, K2
    0.03, data range 255, sample covariances (49/48), and the mean taken over
    the windows lying wholly inside the image (its crop of the 3-pixel border).
    """
    _check_pair(pred_rgb, true_rgb, 3, "RGB")
    if min(pred_rgb.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(pred_rgb.shape[-2:])}")
    x, y = to_uint8_range(pred_rgb), to_uint8_range(true_rgb)
    window_mean = lambda t: F.avg_pool2d(t, SSIM_WINDOW, stride=1)  # noqa: E731
    ux, uy = window_mean(x), window_mean(y)
    cov_norm = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1)
    vx = cov_norm * (window_mean(x * x) - ux * ux)
    vy = cov_norm * (window_mean(y * y) - uy * uy)
    vxy = cov_norm * (window_mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    index = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return index.flatten(2).mean(2).mean(1)


def ab_distance(pred_ab: torch.Tensor, true_ab: torch.Tensor) -> torch.Tensor:
    """Per-pixel Euclidean distance (N, H*W) in ab (Lab units)."""
    _check_pair(pred_ab, true_ab, 2, "ab")
    return (pred_ab.detach().double() - true_ab.detach().double()).pow(2).sum(1).sqrt().flatten(1)


def _pixel_weights(distance: torch.Tensor, weights_map: torch.Tensor | None) -> torch.Tensor:
    if weights_map is None:
        return torch.ones_like(distance)
    if weights_map.numel() != distance.numel():
        raise ValueError(
            f"weights must hold one value per pixel ({tuple(distance.shape)}), got {tuple(weights_map.shape)}"
        )
    return weights_map.detach().to(distance.device, torch.float64).reshape(distance.shape)


def ab_accuracy_curve(
    pred_ab: torch.Tensor, true_ab: torch.Tensor, thresholds: torch.Tensor, weights_map: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, T) share of pixels (weighted by ``weights_map`` if given) with ab distance <= each threshold."""
    distance = ab_distance(pred_ab, true_ab)
    pixel_weight = _pixel_weights(distance, weights_map)
    thresholds = thresholds.to(distance.device, torch.float64)
    first_threshold_reached = torch.bucketize(distance, thresholds)
    counts = torch.zeros(distance.shape[0], thresholds.numel() + 1, dtype=torch.float64, device=distance.device)
    counts.scatter_add_(1, first_threshold_reached, pixel_weight)
    return counts.cumsum(1)[:, :-1] / pixel_weight.sum(1, keepdim=True)


def ab_auc(
    pred_ab: torch.Tensor,
    true_ab: torch.Tensor,
    weights: torch.Tensor | None = None,
    max_threshold: float = 150.0,
    step: float = 1.0,
) -> torch.Tensor:
    """Zhang et al.'s AuC: area under the ab-accuracy curve over thresholds 0..max_threshold, in 0..1.

    The curve is integrated with the trapezoid rule and divided by the
    threshold range. With per-pixel ``weights`` (from ``pixel_rebalance_weights``)
    it is the class-rebalanced AuC.
    """
    if max_threshold <= 0 or step <= 0 or step > max_threshold:
        raise ValueError(f"AuC needs 0 < step <= max_threshold, got step={step}, max_threshold={max_threshold}")
    thresholds = torch.arange(0.0, max_threshold + step / 2, step, dtype=torch.float64)
    curve = ab_accuracy_curve(pred_ab, true_ab, thresholds, weights)
    thresholds = thresholds.to(curve.device)
    return torch.trapezoid(curve, thresholds, dim=1) / (thresholds[-1] - thresholds[0])


def accuracy_within(pred_ab: torch.Tensor, true_ab: torch.Tensor, threshold: float) -> torch.Tensor:
    """Share of pixels whose predicted ab lies within ``threshold`` (inclusive, Lab units) of the truth."""
    return (ab_distance(pred_ab, true_ab) <= threshold).double().mean(1)


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colorfulness of uint8-range RGB (population standard deviations)."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"RGB images must have shape (N, 3, H, W), got {tuple(rgb.shape)}")
    r, g, b = to_uint8_range(rgb).flatten(2).unbind(1)
    rg, yb = r - g, 0.5 * (r + g) - b
    spread = (rg.var(1, correction=0) + yb.var(1, correction=0)).sqrt()
    offset = (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()
    return spread + 0.3 * offset


class LPIPSMetric(nn.Module):
    """LPIPS v0.1 with AlexNet: the ``lpips`` package's linear heads on real ImageNet AlexNet features.

    The ``lpips`` package ships only its linear heads; the AlexNet backbone is
    loaded from ``colorray.models.weights`` (``pretrained="imagenet"`` or a path to
    torchvision's ``alexnet`` checkpoint) and ``PretrainedWeightsMissing`` is
    raised when it is absent. Call with RGB 0..1 images; returns (N,).
    """

    def __init__(self, pretrained: str = "imagenet"):
        super().__init__()
        import lpips

        weights.resolve_weights_path("alexnet", pretrained)  # fail before building a throwaway network
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        # LPIPS slices keep torchvision's indices: net.slice2.3.weight is features.3.weight.
        weights.load_into(self.model.net, "alexnet", pretrained, lambda key: "features." + key.split(".", 1)[1])
        self.model.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPSMetric:
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, pred_rgb: torch.Tensor, true_rgb: torch.Tensor) -> torch.Tensor:
        _check_pair(pred_rgb, true_rgb, 3, "RGB")
        device = next(self.model.parameters()).device
        pred, true = (t.detach().float().clamp(0.0, 1.0).to(device) for t in (pred_rgb, true_rgb))
        return self.model(pred, true, normalize=True).flatten()


class InceptionFeatures(nn.Module):
    """FID's features: torchvision's ImageNet Inception v3 up to its 2048-d average pool, on RGB 0..1 images.

    Images are resized (bilinear) to 299x299 and ImageNet-normalized; the weights
    come from ``colorray.models.weights`` ('imagenet': ``inception_v3_google-0cc3c7bd.pth``
    in the torch hub cache, or a path) and ``PretrainedWeightsMissing`` is raised
    without them. These are torchvision's weights, not the TensorFlow Inception of
    the reference FID implementation: values compare between colorray tables, not
    with published FIDs.
    """

    def __init__(self, pretrained: str = "imagenet"):
        super().__init__()
        from torchvision.models import inception_v3

        self.net = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        weights.load_into(self.net, "inception_v3", pretrained)
        self.net.fc = nn.Identity()
        self.net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> InceptionFeatures:
        super().train(mode)
        self.net.eval()
        return self

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"RGB images must have shape (N, 3, H, W), got {tuple(rgb.shape)}")
        x = F.interpolate(rgb.float().clamp(0.0, 1.0).to(self.mean.device), size=(299, 299), mode="bilinear",
                          align_corners=False)
        return self.net((x - self.mean) / self.std).to("cpu", torch.float64)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D): FID on Inception features.

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))`` with sample
    covariances. The last trace is the sum of the square roots of the eigenvalues
    of ``S_a S_b``: on sets smaller than D those are the squared singular values of
    the (N_a, N_b) cross-product of the centred features, else from two symmetric
    eigendecompositions; both exact, no general matrix square root.
    """
    if features_a.ndim != 2 or features_a.shape[1] != features_b.shape[1] or min(len(features_a), len(features_b)) < 2:
        raise ValueError(f"FID needs two sets of at least 2 feature vectors of one size, got "
                         f"{tuple(features_a.shape)} and {tuple(features_b.shape)}")
    a, b = (f.detach().to(torch.float64).cpu().numpy() for f in (features_a, features_b))
    (n_a, dims), n_b = a.shape, len(b)
    xa, xb = a - a.mean(0), b - b.mean(0)
    if min(n_a, n_b) <= dims:
        trace_root = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / math.sqrt((n_a - 1) * (n_b - 1))
    else:
        cov_a, cov_b = xa.T @ xa / (n_a - 1), xb.T @ xb / (n_b - 1)
        values, vectors = np.linalg.eigh(cov_a)
        root_a = (vectors * np.sqrt(values.clip(min=0.0))) @ vectors.T
        trace_root = np.sqrt(np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0.0)).sum()
    traces = (xa**2).sum() / (n_a - 1) + (xb**2).sum() / (n_b - 1)
    return float(max(((a.mean(0) - b.mean(0)) ** 2).sum() + traces - 2.0 * trace_root, 0.0))


def load_fid_features_or_none(pretrained: str = "imagenet") -> tuple[InceptionFeatures | None, str]:
    """FID's feature network, or None and the reason FID is skipped (the Inception weights cannot be had)."""
    try:
        return InceptionFeatures(pretrained), ""
    except PretrainedWeightsMissing as error:
        return None, f"FID skipped: {error}"


def load_lpips_or_none(pretrained: str = "imagenet", warn: bool = True) -> LPIPSMetric | None:
    """An ``LPIPSMetric``, or None (a one-line warning if ``warn``) when the AlexNet weights cannot be had."""
    try:
        return LPIPSMetric(pretrained)
    except PretrainedWeightsMissing as error:
        if warn:
            log.warning("LPIPS unavailable: %s", error.reason)
        return None


def color_score(psnr_db: torch.Tensor, colorfulness_gap: torch.Tensor) -> torch.Tensor:
    """PSNR in dB less ``COLOR_SCORE_DB_PER_CF`` dB per unit of colorfulness gap: higher is better.

    PSNR alone prefers gray output (an L2-optimal guess is desaturated); the gap
    term charges for the color lost, at a rate measured in docs/metrics.md.
    """
    return psnr_db - COLOR_SCORE_DB_PER_CF * colorfulness_gap


def default_selection_metric() -> str:
    """``val/lpips`` where the AlexNet weights LPIPS needs can be had, else ``val/color_score``."""
    try:
        weights.resolve_weights_path("alexnet", "imagenet")
    except PretrainedWeightsMissing:
        return "val/color_score"
    return "val/lpips"


def metric_mode(metric: str) -> str:
    """Whether a reported metric is better high ('max') or low ('min'); losses (``train/...``) are 'min'."""
    if metric.startswith("train/"):
        return "min"
    name = metric.split("/", 1)[-1]
    if name in HIGHER_IS_BETTER or name.startswith("acc_"):
        return "max"
    if name in LOWER_IS_BETTER:
        return "min"
    raise ValueError(f"cannot tell whether a higher or lower {metric} is better: set the mode to max or min")


def resolve_selection(metric: str, mode: str) -> tuple[str, str]:
    """The selection rule ``(metric, mode)`` with 'auto' filled in: the one rule of export, Tune and loading."""
    metric = default_selection_metric() if metric == AUTO else metric
    if not metric.startswith(("val/", "train/")):
        raise ValueError(f"the selection metric must name a reported metric such as val/color_score, got '{metric}'")
    if mode not in ("max", "min", AUTO):
        raise ValueError(f"the selection mode must be max, min or auto, got '{mode}'")
    return metric, metric_mode(metric) if mode == AUTO else mode


def select_best(
    candidates: Sequence[tuple[Candidate, Mapping[str, Any]]], metric: str, mode: str
) -> tuple[Candidate, Mapping[str, Any]] | None:
    """The ``(candidate, metrics)`` with the best ``metric``, the later one on a tie; None if none reports it.

    ``candidates`` come in training order; values that are missing or NaN do not count.
    """
    sign = 1.0 if mode == "max" else -1.0
    scored = [(sign * float(m[metric]), index) for index, (_, m) in enumerate(candidates)
              if isinstance(m.get(metric), (int, float)) and not math.isnan(m[metric])]
    return candidates[max(scored)[1]] if scored else None


def accuracy_key(threshold: float) -> str:
    return f"acc_{threshold:g}"


def true_pixel_weights(true_ab_norm: torch.Tensor, rebalance: torch.Tensor) -> torch.Tensor:
    """The rebalancing weight (N, 1, H, W) of each true ab pixel (normalized ab), for ``auc_rebalanced``."""
    return color.pixel_rebalance_weights(color.denormalize_ab(true_ab_norm.detach().float()), rebalance,
                                         color.ab_bins())


@torch.no_grad()
def image_metrics(
    L_norm: torch.Tensor,
    pred_ab_norm: torch.Tensor,
    true_ab_norm: torch.Tensor,
    *,
    lpips: LPIPSMetric | None = None,
    rebalance: torch.Tensor | None = None,
    pixel_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Every per-image metric, each (N,) float64 on CPU, from normalized L and ab at one resolution.

    Both images are rebuilt from the true L: with the predicted ab (clipped to
    the gamut box, then to 0..1 RGB) and with the true ab. ab metrics compare
    the predicted ab, clipped to +-110, with the true ab in Lab units.
    ``rebalance`` (Q,) are class weights over ``color.ab_bins()`` (from
    ``color.rebalance_weights``) and add ``auc_rebalanced``; ``lpips`` adds ``lpips``.
    ``pixel_weights`` (N, 1, H, W), ``true_pixel_weights`` of the true ab computed once, stand for
    ``rebalance`` when several predictions of one batch are scored (the nearest-bin search is the slow part).
    """
    if L_norm.ndim != 4 or L_norm.shape[1] != 1 or L_norm.shape[-2:] != true_ab_norm.shape[-2:]:
        raise ValueError(
            f"L must have shape (N, 1, H, W) matching ab {tuple(true_ab_norm.shape)}, got {tuple(L_norm.shape)}"
        )
    _check_pair(pred_ab_norm, true_ab_norm, 2, "ab")
    L_norm, pred_ab_norm, true_ab_norm = (t.detach().float() for t in (L_norm, pred_ab_norm, true_ab_norm))
    pred_rgb = color.model_outputs_to_rgb(L_norm, pred_ab_norm)
    true_rgb = color.model_outputs_to_rgb(L_norm, true_ab_norm)
    pred_ab = color.denormalize_ab(pred_ab_norm).clamp(-color.AB_LIMIT, color.AB_LIMIT)
    true_ab = color.denormalize_ab(true_ab_norm)
    results = {
        "psnr": psnr(pred_rgb, true_rgb),
        "ssim": ssim(pred_rgb, true_rgb),
        "mse": mse(pred_rgb, true_rgb),
        "mae": mae(pred_rgb, true_rgb),
        "auc": ab_auc(pred_ab, true_ab),
    }
    if pixel_weights is None and rebalance is not None:
        pixel_weights = true_pixel_weights(true_ab_norm, rebalance)
    if pixel_weights is not None:
        results["auc_rebalanced"] = ab_auc(pred_ab, true_ab, weights=pixel_weights)
    for threshold in ACCURACY_THRESHOLDS:
        results[accuracy_key(threshold)] = accuracy_within(pred_ab, true_ab, threshold)
    results["colorfulness"] = colorfulness(pred_rgb)
    results["colorfulness_gt"] = colorfulness(true_rgb)
    results["colorfulness_gap"] = (results["colorfulness"] - results["colorfulness_gt"]).abs()
    results["color_score"] = color_score(results["psnr"], results["colorfulness_gap"])
    if lpips is not None:
        results["lpips"] = lpips(pred_rgb, true_rgb)
    return {name: values.to("cpu", torch.float64) for name, values in results.items()}


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and half-width of its 95% Student-t confidence interval (nan for fewer than 2 values)."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    if values.numel() == 0:
        raise ValueError("cannot summarize a metric with no values")
    mean = values.mean().item()
    if values.numel() < 2:
        return mean, math.nan
    t_quantile = stats.t.ppf(0.975, values.numel() - 1)
    return mean, float(t_quantile * values.std(correction=1).item() / math.sqrt(values.numel()))


def summarize(per_image: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """Each metric's per-image values to (mean, 95% CI half-width)."""
    return {name: mean_ci95(values) for name, values in per_image.items()}
