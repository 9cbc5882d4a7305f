"""Color science for colorray: the one home of every color formula.

- sRGB (D65) <-> CIELAB on batched torch tensors of shape (N, 3, H, W), on any
  device, differentiable, matching ``skimage.color.rgb2lab`` / ``lab2rgb``.
- The normalization the networks see (``L/50 - 1`` in, ``ab/110`` out).
- Zhang et al.'s quantized ab space (ECCV 2016): in-gamut bins on a grid,
  soft-encoding of ground truth onto the nearest bins, class-rebalancing
  weights from an empirical prior, and annealed-mean decoding (T = 0.38,
  ``ANNEALED_MEAN_T``). Besides colorray's 262 in-gamut bins, the 313 bins of
  Zhang et al.'s released network (their centres read from its weights,
  ``zhang_bins``) and its input normalization ``(L - 50) / 100``
  (``zhang_normalize_l``).
- The full-resolution CPU path on uint8 numpy images (``lightness``,
  ``join_lightness_ab``): lookup tables and OpenCV's fused Lab -> RGB instead of
  float tensor passes, the same results as the tensor functions to a fraction
  of a uint8 level, about ten times faster on a 1080p photo.
- The output spaces a generator predicts in (``OUTPUT_SPACES``: ab, bins, rgb)
  and their conversions: ``prediction_to_ab`` (any prediction to normalized ab)
  and ``training_target`` (what a prediction is compared with in training).

Everything here is a pure function of its inputs.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

L_SCALE = 50.0
AB_SCALE = 110.0
AB_LIMIT = 110.0
ZHANG_L_CENTER, ZHANG_L_SCALE = 50.0, 100.0  # the input of Zhang et al.'s released network: (L - 50) / 100
ANNEALED_MEAN_T = 0.38  # Zhang et al.'s annealed-mean temperature, between the bins' mode (0) and mean (1)
NEAREST_BIN_CHUNK = 65536  # pixels per nearest-bin search: bounds the (pixels x bins) distance table

_ILLUMINANT_D65 = (0.95047, 1.0, 1.08883)
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_EPS = 1e-8
_LINEAR_THRESHOLD = 0.008856  # XYZ/white below which f (and so L) is linear


def _matrix(rows, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def _apply_matrix(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix, image)


def _as_float_rgb(rgb: torch.Tensor) -> torch.Tensor:
    if rgb.dtype == torch.uint8:
        return rgb.float() / 255.0
    if not rgb.is_floating_point():
        raise TypeError(f"RGB must be uint8 or floating point, got {rgb.dtype}")
    return rgb


def _check_nchw(image: torch.Tensor, name: str) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W), got {tuple(image.shape)}")


def _is_uint8_on_cpu(rgb: torch.Tensor) -> bool:
    return rgb.dtype == torch.uint8 and rgb.device.type == "cpu" and rgb.numel() > 0


def _srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    return torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)


@functools.lru_cache(maxsize=8)
def _uint8_linear_table(device: torch.device) -> torch.Tensor:
    return _srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255.0).float().to(device)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (uint8 0..255 or float 0..1) to CIELAB (L in 0..100, a/b about -128..127).

    uint8 batches on the CPU take ``_uint8_lab_on_cpu`` (about 3x faster, the same
    values to 2e-4); the result is then a channels-last strided (N, 3, H, W) view.
    """
    _check_nchw(rgb, "rgb")
    if _is_uint8_on_cpu(rgb):
        return _uint8_lab_on_cpu(rgb)
    if rgb.dtype == torch.uint8:  # a 256-entry table instead of a power per pixel
        linear = _uint8_linear_table(rgb.device)[rgb.long()]
    else:
        rgb = _as_float_rgb(rgb)
        linear = _srgb_to_linear(rgb.to(torch.float64 if rgb.dtype == torch.float64 else torch.float32))
    xyz = _apply_matrix(_matrix(_XYZ_FROM_RGB, linear), linear)
    xyz = xyz / torch.tensor(_ILLUMINANT_D65, dtype=xyz.dtype, device=xyz.device).view(1, 3, 1, 1)
    f = torch.where(
        xyz > 0.008856,
        xyz.clamp(min=0.008856) ** (1.0 / 3.0),
        7.787 * xyz + 16.0 / 116.0,
    )
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    return torch.cat([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


_LAB_FROM_F = ((0, 116, 0, -16), (500, -500, 0, 0), (0, 200, -200, 0))  # (L, a, b) from (fx, fy, fz, 1)


@functools.cache
def _uint8_lab_tables(normalized: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's inputs: uint8 -> linear table, RGB -> XYZ/white matrix, f(XYZ) -> Lab matrix with offsets.

    ``normalized`` folds ``normalize_l`` and ``normalize_ab`` into the last matrix.
    """
    linear = _srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255.0).float().numpy()
    xyz = np.array(_XYZ_FROM_RGB) / np.array(_ILLUMINANT_D65)[:, None]
    lab = np.array(_LAB_FROM_F, dtype=np.float64)
    if normalized:
        lab = lab / np.array([[L_SCALE], [AB_SCALE], [AB_SCALE]])
        lab[0, 3] -= 1.0
    return np.repeat(linear.reshape(256, 1, 1), 3, axis=2), xyz.astype(np.float32), lab.astype(np.float32)


def _uint8_lab_on_cpu(rgb: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """``rgb_to_lab`` of a uint8 CPU batch: a table look-up and two fused 3x3 transforms in OpenCV.

    With ``normalized`` the result is already ``normalize_l``/``normalize_ab``'s (one pass less).
    """
    n, _, h, w = rgb.shape
    linear_table, xyz_matrix, lab_matrix = _uint8_lab_tables(normalized)
    pixels = rgb.permute(0, 2, 3, 1).contiguous().numpy().reshape(n * h, w, 3)
    xyz = cv2.transform(cv2.LUT(pixels, linear_table), xyz_matrix)
    f = np.cbrt(xyz)
    dark = xyz <= _LINEAR_THRESHOLD
    f[dark] = xyz[dark] * 7.787 + 16.0 / 116.0
    return torch.from_numpy(cv2.transform(f, lab_matrix, dst=xyz)).view(n, h, w, 3).permute(0, 3, 1, 2)


def lab_to_rgb(lab: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """CIELAB to sRGB floats in 0..1.

    With ``clip`` (the default) out-of-gamut input, e.g. a model's raw ab, is
    made safe: L is clamped to 0..100, ab to +-110, negative Z to 0 as
    scikit-image does, and the result to 0..1, so no NaN and no wrap-around.
    ``clip=False`` returns the unclipped sRGB values, used to test gamut
    membership.
    """
    _check_nchw(lab, "lab")
    if clip:
        lab = torch.cat([lab[:, 0:1].clamp(0.0, 100.0), lab[:, 1:3].clamp(-AB_LIMIT, AB_LIMIT)], dim=1)
    L, a, b = lab[:, 0:1], lab[:, 1:2], lab[:, 2:3]
    fy = (L + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = fy - b / 200.0
    if clip:
        fz = fz.clamp(min=0.0)
    f = torch.cat([fx, fy, fz], dim=1)
    xyz = torch.where(f > 0.2068966, f.clamp(min=0.2068966) ** 3, (f - 16.0 / 116.0) / 7.787)
    xyz = xyz * torch.tensor(_ILLUMINANT_D65, dtype=xyz.dtype, device=xyz.device).view(1, 3, 1, 1)
    rgb_from_xyz = torch.linalg.inv(_matrix(_XYZ_FROM_RGB, xyz).double()).to(xyz.dtype)
    linear = _apply_matrix(rgb_from_xyz, xyz)
    rgb = torch.where(
        linear > 0.0031308,
        1.055 * linear.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055,
        12.92 * linear,
    )
    return rgb.clamp(0.0, 1.0) if clip else rgb


def normalize_l(L: torch.Tensor) -> torch.Tensor:
    """L in 0..100 to the network's input range -1..1."""
    return L / L_SCALE - 1.0


def denormalize_l(L_norm: torch.Tensor) -> torch.Tensor:
    return (L_norm + 1.0) * L_SCALE


def normalize_ab(ab: torch.Tensor) -> torch.Tensor:
    """ab in Lab units to the network's output range (about -1..1)."""
    return ab / AB_SCALE


def denormalize_ab(ab_norm: torch.Tensor) -> torch.Tensor:
    return ab_norm * AB_SCALE


def zhang_normalize_l(L_norm: torch.Tensor) -> torch.Tensor:
    """colorray's normalized L (``L/50 - 1``) as Zhang et al.'s released network takes it, ``(L - 50) / 100``."""
    return (denormalize_l(L_norm) - ZHANG_L_CENTER) / ZHANG_L_SCALE


def rgb_to_model_inputs(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8/float RGB batch to the normalized (L, ab) pair the models train on."""
    _check_nchw(rgb, "rgb")
    if _is_uint8_on_cpu(rgb):  # normalized by the transform itself: channels-last views, no extra pass
        inputs = _uint8_lab_on_cpu(rgb, normalized=True)
        return inputs[:, 0:1], inputs[:, 1:3]
    lab = rgb_to_lab(rgb)
    return normalize_l(lab[:, 0:1]), normalize_ab(lab[:, 1:3])


def model_outputs_to_rgb(L_norm: torch.Tensor, ab_norm: torch.Tensor) -> torch.Tensor:
    """Normalized L and predicted ab back to sRGB floats in 0..1 (ab clipped to the gamut box)."""
    lab = torch.cat([denormalize_l(L_norm), denormalize_ab(ab_norm)], dim=1)
    return lab_to_rgb(lab)


def rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """The gray rendition of an image: its own L with ab = 0, as sRGB floats."""
    lab = rgb_to_lab(rgb)
    return lab_to_rgb(torch.cat([lab[:, 0:1], torch.zeros_like(lab[:, 1:3])], dim=1))


def resize_ab(ab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of an ab map (used to join low-resolution ab with full-resolution L)."""
    if tuple(ab.shape[-2:]) == tuple(size):
        return ab
    return F.interpolate(ab, size=size, mode="bilinear", align_corners=False)


# --- uint8 images at full resolution (CPU) ------------------------------------------

_L_PER_Y = 116.0 * 7.787  # the slope of L's linear part (scikit-image's constants)
_CUBED_116 = 116.0**3  # L = cbrt(116^3 Y) - 16: the factor 116 taken inside the cube root, into the table


@functools.cache
def _scaled_luminance_table() -> np.ndarray:
    """(256, 1, 3) float32: each channel's uint8 value's share of 116^3 times the relative luminance Y."""
    linear = _srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255.0)
    shares = linear[:, None] * torch.tensor(_XYZ_FROM_RGB[1], dtype=torch.float64) * _CUBED_116
    return shares.float().numpy().reshape(256, 1, 3)


def lightness(rgb: np.ndarray) -> np.ndarray:
    """CIELAB L (H, W) float32 of a uint8 sRGB image (H, W, 3): ``rgb_to_lab``'s L to 1e-4.

    116^3 Y is three table look-ups and a sum; only the cube root is computed per pixel.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {rgb.dtype} {rgb.shape}")
    scaled = cv2.transform(cv2.LUT(rgb, _scaled_luminance_table()), np.ones((1, 3), np.float32))
    L = np.cbrt(scaled)
    L -= 16.0
    dark = cv2.compare(scaled, _LINEAR_THRESHOLD * _CUBED_116, cv2.CMP_LE)
    cv2.copyTo(cv2.multiply(scaled, _L_PER_Y / _CUBED_116), dark, L)
    return L


def lightness_uint8(L: np.ndarray) -> np.ndarray:
    """L (0..100) rounded onto 0..255: an 8-bit copy for fast antialiased downscaling."""
    return cv2.convertScaleAbs(L, alpha=255.0 / 100.0)


_JOIN_BAND_ROWS = 128


def join_lightness_ab(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """uint8 sRGB (H, W, 3) of full-resolution L (H, W, float32, 0..100) joined with ab (h, w, 2) of any size.

    ab (Lab units) is resized bilinearly (half-pixel centers, as ``resize_ab``)
    to L's size and clipped to the ab box; Z is kept non-negative and the result
    clipped to the sRGB cube as ``lab_to_rgb`` does, so the output equals
    ``lab_to_rgb(cat(L, resize_ab(ab)))`` in uint8 to within one level.
    """
    height, width = L.shape
    ab = ab.astype(np.float32, copy=False)
    a, b = (cv2.resize(np.ascontiguousarray(ab[..., c]), (width, height), interpolation=cv2.INTER_LINEAR)
            for c in (0, 1))
    if np.abs(ab).max() > AB_LIMIT:  # resized values lie between the small ones: clip only when needed
        np.clip(a, -AB_LIMIT, AB_LIMIT, out=a)
        np.clip(b, -AB_LIMIT, AB_LIMIT, out=b)
    L = L.astype(np.float32, copy=False)
    cv2.min(b, cv2.addWeighted(L, 200.0 / 116.0, L, 0.0, 16.0 * 200.0 / 116.0), dst=b)  # fz = fy - b/200 >= 0
    # Lab -> RGB in bands of rows through two small reused buffers: the same values as one whole-image pass
    # at half its time at 1080p, which spent it in cache misses and page faults of 25 MB float buffers.
    out = np.empty((height, width, 3), np.uint8)
    lab, rgb = (np.empty((min(_JOIN_BAND_ROWS, height), width, 3), np.float32) for _ in range(2))
    for top in range(0, height, _JOIN_BAND_ROWS):
        rows = slice(top, min(top + _JOIN_BAND_ROWS, height))
        count = rows.stop - top
        cv2.merge([L[rows], a[rows], b[rows]], dst=lab[:count])
        cv2.cvtColor(lab[:count], cv2.COLOR_Lab2RGB, dst=rgb[:count])  # clipped to 0..1
        cv2.convertScaleAbs(rgb[:count], alpha=255.0, dst=out[rows])
    return out


# --- Quantized ab space (Zhang et al., ECCV 2016) ------------------------------------


@functools.lru_cache(maxsize=8)
def _ab_bins_cached(grid: int, l_steps: int, sub_steps: int) -> torch.Tensor:
    centers = torch.arange(-AB_LIMIT, AB_LIMIT + 1e-6, grid, dtype=torch.float64)
    a, b = torch.meshgrid(centers, centers, indexing="ij")
    candidates = torch.stack([a.flatten(), b.flatten()], dim=1)
    offsets = torch.linspace(-grid / 2, grid / 2, sub_steps, dtype=torch.float64)
    da, db = torch.meshgrid(offsets, offsets, indexing="ij")
    lightness = torch.linspace(0.0, 100.0, l_steps, dtype=torch.float64)
    # Every (candidate, sub-cell offset, L) triple as one Lab pixel.
    ab = candidates[:, None, :] + torch.stack([da.flatten(), db.flatten()], dim=1)[None]
    n_cand, n_off = ab.shape[:2]
    ab = ab[:, :, None, :].expand(n_cand, n_off, l_steps, 2)
    L = lightness.view(1, 1, l_steps, 1).expand(n_cand, n_off, l_steps, 1)
    lab = torch.cat([L, ab], dim=-1).reshape(-1, 3).T.reshape(1, 3, -1, 1)
    rgb = lab_to_rgb(lab, clip=False).reshape(3, n_cand, n_off * l_steps)
    in_gamut = ((rgb >= 0.0) & (rgb <= 1.0)).all(dim=0).any(dim=1)
    return candidates[in_gamut].float()


def ab_bins(grid: int = 10, l_steps: int = 101, sub_steps: int = 5) -> torch.Tensor:
    """Centers (Q, 2) of the grid cells of ab space that hold at least one sRGB color.

    A cell of side ``grid`` centred on a multiple of ``grid`` in -110..110 is
    kept when some point of it (a ``sub_steps`` x ``sub_steps`` lattice over
    the cell) at some lightness (``l_steps`` values over 0..100) maps to an
    sRGB color inside 0..1. With the defaults this gives 262 bins, not the 313
    of Zhang et al., whose table covers more than the sRGB gamut; see
    ``docs/color.md``.
    """
    return _ab_bins_cached(grid, l_steps, sub_steps).clone()


def nearest_bins(ab: torch.Tensor, bins: torch.Tensor, neighbours: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N, k, H, W) and squared distances of the k bins nearest each ab pixel (Lab units).

    Pixels are searched in chunks so the (pixels x bins) distance table stays small on large images.
    """
    n, _, h, w = ab.shape
    pixels = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    bins = bins.to(device=ab.device, dtype=ab.dtype)
    found = [
        (chunk[:, None, :] - bins[None, :, :]).pow(2).sum(-1).topk(neighbours, dim=1, largest=False)
        for chunk in pixels.split(NEAREST_BIN_CHUNK)
    ]
    dist = torch.cat([d for d, _ in found]) if found else pixels.new_zeros(0, neighbours)
    index = torch.cat([i for _, i in found]) if found else torch.zeros(0, neighbours, dtype=torch.long)
    to_nkhw = lambda t: t.reshape(n, h, w, neighbours).permute(0, 3, 1, 2)  # noqa: E731
    return to_nkhw(index), to_nkhw(dist)


def zhang_bins(model_out_weight: torch.Tensor) -> torch.Tensor:
    """Bin centres (Q, 2) in ab units from the 1x1 ``model_out`` conv (2, Q, 1, 1) of Zhang et al.'s released
    network, whose weights are the centres in ab/110 units (its ``softmax -> model_out`` is the mean of the bins)."""
    if model_out_weight.ndim != 4 or model_out_weight.shape[0] != 2 or model_out_weight.shape[2:] != (1, 1):
        raise ValueError(f"model_out weight must have shape (2, Q, 1, 1), got {tuple(model_out_weight.shape)}")
    return denormalize_ab(model_out_weight[:, :, 0, 0].T.float())


def prior_on_bins(prior: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """An ab prior over ``ab_bins()`` moved onto another set of ``bins``: each count goes to its nearest bin."""
    prior = torch.as_tensor(prior, dtype=torch.float64)
    if prior.shape[0] == bins.shape[0]:
        return prior
    source = ab_bins()
    if prior.shape != (source.shape[0],):
        raise ValueError(f"prior must hold one count per bin of ab_bins() ({source.shape[0]}), got {tuple(prior.shape)}")
    index, _ = nearest_bins(source.T.reshape(1, 2, -1, 1), bins.float(), 1)
    return torch.zeros(bins.shape[0], dtype=torch.float64).index_add_(0, index.flatten(), prior)


def pixel_rebalance_weights(ab: torch.Tensor, class_weights: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Weight (N, 1, H, W) of each ab pixel (Lab units): the ``rebalance_weights`` entry of its nearest bin."""
    if class_weights.shape != (bins.shape[0],):
        raise ValueError(f"rebalancing weights must have shape ({bins.shape[0]},), got {tuple(class_weights.shape)}")
    index, _ = nearest_bins(ab.detach().float(), bins, 1)
    return class_weights.to(ab.device)[index]


def soft_encode(
    ab: torch.Tensor, bins: torch.Tensor, neighbours: int = 5, sigma: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-encode ab (N, 2, H, W, Lab units) onto its nearest bins with a Gaussian kernel.

    Returns ``(index, weight)``, both (N, k, H, W); weights sum to 1 per pixel.
    This sparse form feeds the cross-entropy by ``gather``; ``dense_soft_encoding``
    expands it to (N, Q, H, W) when a full distribution is wanted.
    """
    index, sq_dist = nearest_bins(ab, bins, neighbours)
    weight = torch.softmax(-sq_dist / (2.0 * sigma**2), dim=1)
    return index, weight


def dense_soft_encoding(index: torch.Tensor, weight: torch.Tensor, num_bins: int) -> torch.Tensor:
    n, _, h, w = index.shape
    dense = torch.zeros(n, num_bins, h, w, dtype=weight.dtype, device=weight.device)
    return dense.scatter_add_(1, index, weight)


def ab_histogram(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Counts (Q,) of ab pixels (N, 2, H, W, Lab units) per nearest bin: the raw empirical prior."""
    index, _ = nearest_bins(ab, bins, 1)
    return torch.bincount(index.flatten(), minlength=bins.shape[0]).to(torch.float64)


def smooth_prior(prior: torch.Tensor, bins: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Gaussian smoothing (in ab units) of a distribution over bins."""
    bins = bins.to(torch.float64)
    kernel = torch.exp(-torch.cdist(bins, bins).pow(2) / (2.0 * sigma**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    smoothed = kernel.T @ prior.to(torch.float64)
    return smoothed / smoothed.sum()


def rebalance_weights(
    prior: torch.Tensor, bins: torch.Tensor, mix: float = 0.5, sigma: float = 5.0
) -> torch.Tensor:
    """Zhang et al.'s class-rebalancing weights w ∝ ((1-λ) p̃ + λ/Q)^-1 with E_p̃[w] = 1.

    ``prior`` holds counts or probabilities per bin; it is normalized,
    Gaussian-smoothed by ``sigma`` and mixed with the uniform distribution by ``mix`` (λ).
    """
    prior = prior.to(torch.float64)
    if prior.shape != (bins.shape[0],) or prior.sum() <= 0:
        raise ValueError(f"prior must be non-negative with shape ({bins.shape[0]},) and a positive sum")
    smoothed = smooth_prior(prior / prior.sum(), bins, sigma)
    weights = 1.0 / ((1.0 - mix) * smoothed + mix / bins.shape[0])
    weights = weights / (smoothed * weights).sum()
    return weights.float()


def annealed_mean(logits: torch.Tensor, bins: torch.Tensor, temperature: float = ANNEALED_MEAN_T) -> torch.Tensor:
    """Decode Q-way logits (N, Q, H, W) to ab (N, 2, H, W, Lab units).

    ``temperature`` 1 gives the distribution's mean, 0 its mode, and Zhang et
    al.'s 0.38 the annealed mean in between.
    """
    bins = bins.to(device=logits.device, dtype=logits.dtype)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return bins[logits.argmax(dim=1)].permute(0, 3, 1, 2)
    probs = torch.softmax(logits / temperature, dim=1)
    return torch.einsum("nqhw,qc->nchw", probs, bins)


# --- Output spaces: what a generator predicts, and how each becomes ab -----------------

OUTPUT_SPACES = {
    "ab": "normalized ab (N, 2, H, W): ab / AB_SCALE",
    "bins": "logits (N, Q, ceil(H/4), ceil(W/4)) over ab_bins(), decoded by the annealed mean",
    "rgb": "sRGB (N, 3, H, W) in 0..1",
}  # discriminators predict "critic" patch logits, which have no colors


def prediction_to_ab(
    prediction: torch.Tensor, space: str, L_norm: torch.Tensor, temperature: float = ANNEALED_MEAN_T,
    bins: torch.Tensor | None = None,
) -> torch.Tensor:
    """A generator's prediction in ``space`` to normalized ab at the resolution of ``L_norm``.

    ``bins``: the bin centres of a ``bins`` prediction (default ``ab_bins()``; Zhang et al.'s network has its own).
    """
    size = tuple(L_norm.shape[-2:])
    if space == "ab":
        return resize_ab(prediction, size)
    if space == "bins":
        bins = ab_bins() if bins is None else bins
        ab = annealed_mean(prediction.float(), bins.to(prediction.device), temperature)
        return normalize_ab(resize_ab(ab, size))
    if space == "rgb":
        lab = rgb_to_lab(prediction.float().clamp(0.0, 1.0))
        return normalize_ab(resize_ab(lab[:, 1:3], size))
    raise ValueError(f"model output space '{space}' has no ab decoding; output spaces: {', '.join(OUTPUT_SPACES)}")


def training_target(space: str, rgb: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """What a prediction in ``space`` is compared with: sRGB 0..1 for rgb models, else the normalized ``ab``."""
    return _as_float_rgb(rgb) if space == "rgb" else ab
