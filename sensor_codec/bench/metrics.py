"""Quality and rate metrics for camera images and point clouds.

Definitions (stated once here, used by the benchmark, its tables and plots):

Camera
  * ``bpp``: compressed payload bits (the whole container) / (height x width).
  * ``psnr``: 10 log10(peak^2 / MSE), MSE over every pixel of every channel
    (RGB together, not averaged per channel), peak 255 for 8-bit images and
    65535 for 16-bit ones. Identical images give +inf.
  * ``ms_ssim``: multi-scale SSIM of Wang, Simoncelli and Bovik (2003):
    5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), an 11x11
    Gaussian window of sigma 1.5 applied as a separable "valid" filter,
    K1 = 0.01, K2 = 0.03, dynamic range L = peak, 2x2 average down-sampling
    between scales (with the borders of Wang's msssim.m). Contrast-structure
    terms are clamped at 0 before the weighted product (as pytorch_msssim and
    CompressAI do, so the value stays real). Colour images: MS-SSIM of each
    RGB channel, then the mean of the three (pytorch_msssim's convention).
    Needs both sides >= 161 pixels.
    ``ms_ssim_db`` = -10 log10(1 - MS-SSIM), the usual log scale for plots.

Point clouds (coordinates in metres)
  * ``bits_per_point``: payload bits / number of points in the input cloud.
  * Corresponding-point errors (codecs that keep point order): Euclidean
    distance between point i of the original and point i of the decoded
    cloud; ``max_error``, ``mean_error`` and ``rms_error`` over the points
    that are finite in both. ``nan_mismatch`` counts points finite in one
    cloud and not the other.
  * ``chamfer``: symmetric Chamfer distance = (mean over a of the distance
    from a to its nearest b + mean over b of the distance from b to its
    nearest a) / 2, in metres (plain distances, not squared).
  * ``d1_psnr``: MPEG PCC point-to-point geometry PSNR (pc_error "D1"):
    MSE_ab = mean over a of the squared distance to the nearest b,
    MSE = max(MSE_ab, MSE_ba), PSNR = 10 log10(3 p^2 / MSE), the factor 3
    because the squared distance sums three coordinates. The peak p defaults
    to the diagonal of the original cloud's bounding box (reported with the
    value so numbers stay comparable); pass ``peak`` to fix it instead.

Radar: bits per point and, per field, the largest absolute error between
corresponding points (finite values only).

Segmentation (a network's class map on the decoded frame against labels)
  * ``confusion``: counts[truth, predicted] over the labelled pixels; label
    ids outside 0..num_classes-1 (CamVid's void, 11) are ignored.
  * ``miou``: the standard CamVid protocol on the confusion matrix summed
    over all frames: IoU_c = TP / (TP + FP + FN) per class, classes absent
    from both truth and prediction left out of the mean.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import InvalidFrameError
from ..frames import CameraFrame, PointCloudFrame

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
MS_SSIM_MIN_SIDE = (SSIM_WINDOW - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1  # 161


# --- camera ----------------------------------------------------------------------------


def _pixels_pair(original: np.ndarray, decoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(original), np.asarray(decoded)
    if a.shape != b.shape:
        raise InvalidFrameError(
            f"images differ in shape: original {a.shape}, decoded {b.shape}")
    return a, b


def peak_value(dtype: np.dtype) -> float:
    """The PSNR peak for an image dtype: its largest integer value."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        raise InvalidFrameError(f"PSNR needs integer pixels, got {dtype}")
    return float(np.iinfo(dtype).max)


def mse(original: np.ndarray, decoded: np.ndarray) -> float:
    a, b = _pixels_pair(original, decoded)
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(original: np.ndarray, decoded: np.ndarray, peak: float | None = None) -> float:
    """PSNR in dB over all pixels and channels; +inf for identical images."""
    a, _ = _pixels_pair(original, decoded)
    peak = peak_value(a.dtype) if peak is None else float(peak)
    err = mse(original, decoded)
    return math.inf if err == 0 else 10.0 * math.log10(peak * peak / err)


def _gaussian_window() -> np.ndarray:
    x = np.arange(SSIM_WINDOW, dtype=np.float64) - (SSIM_WINDOW - 1) / 2
    g = np.exp(-(x * x) / (2 * SSIM_SIGMA ** 2))
    return g / g.sum()


_WINDOW = _gaussian_window()


def _filter_valid(img: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter keeping only fully covered positions ("valid")."""
    half = SSIM_WINDOW // 2
    out = ndimage.correlate1d(img, _WINDOW, axis=0, mode="reflect")
    out = ndimage.correlate1d(out, _WINDOW, axis=1, mode="reflect")
    return out[half:-half, half:-half]


def _ssim_terms(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[float, float]:
    """(mean SSIM, mean contrast-structure) of two single-channel float images."""
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x), _filter_valid(y)
    sxx = _filter_valid(x * x) - mu_x * mu_x
    syy = _filter_valid(y * y) - mu_y * mu_y
    sxy = _filter_valid(x * y) - mu_x * mu_y
    cs_map = (2 * sxy + c2) / (sxx + syy + c2)
    lum_map = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return float(np.mean(lum_map * cs_map)), float(np.mean(cs_map))


def _downsample(img: np.ndarray) -> np.ndarray:
    """2x2 mean then every other sample, as Wang's msssim.m does (imfilter with
    'symmetric' borders, then 1:2:end): an odd last row/column is averaged
    with its mirror, i.e. kept as is."""
    if img.shape[0] % 2:
        img = np.concatenate([img, img[-1:, :]], axis=0)
    if img.shape[1] % 2:
        img = np.concatenate([img, img[:, -1:]], axis=1)
    return 0.25 * (img[0::2, 0::2] + img[1::2, 0::2] + img[0::2, 1::2] + img[1::2, 1::2])


def ssim(original: np.ndarray, decoded: np.ndarray, data_range: float | None = None) -> float:
    """Single-scale SSIM (Gaussian 11x11, sigma 1.5), mean over channels."""
    a, b = _pixels_pair(original, decoded)
    rng = peak_value(a.dtype) if data_range is None else float(data_range)
    chans = [a] if a.ndim == 2 else [a[:, :, c] for c in range(a.shape[2])]
    chans_b = [b] if b.ndim == 2 else [b[:, :, c] for c in range(b.shape[2])]
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise InvalidFrameError(f"SSIM needs images of at least {SSIM_WINDOW} pixels a side, "
                                f"got {a.shape[:2]}")
    return float(np.mean([_ssim_terms(x.astype(np.float64), y.astype(np.float64), rng)[0]
                          for x, y in zip(chans, chans_b)]))


def ms_ssim_channel(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """MS-SSIM of one channel (2-D float arrays)."""
    weights = np.asarray(MS_SSIM_WEIGHTS)
    cs_values = []
    for level in range(len(weights)):
        ssim_val, cs = _ssim_terms(x, y, data_range)
        if level < len(weights) - 1:
            cs_values.append(max(cs, 0.0))
            x, y = _downsample(x), _downsample(y)
    values = np.array(cs_values + [max(ssim_val, 0.0)])
    return float(np.prod(values ** weights))


def ms_ssim(original: np.ndarray, decoded: np.ndarray, data_range: float | None = None) -> float:
    """MS-SSIM in [0, 1] (1 for identical images); colour: mean of per-channel values."""
    a, b = _pixels_pair(original, decoded)
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        raise InvalidFrameError(
            f"MS-SSIM with {len(MS_SSIM_WEIGHTS)} scales needs images of at least "
            f"{MS_SSIM_MIN_SIDE} pixels a side, got {a.shape[1]}x{a.shape[0]}")
    rng = peak_value(a.dtype) if data_range is None else float(data_range)
    if a.ndim == 2:
        return ms_ssim_channel(a.astype(np.float64), b.astype(np.float64), rng)
    return float(np.mean([ms_ssim_channel(a[:, :, c].astype(np.float64),
                                          b[:, :, c].astype(np.float64), rng)
                          for c in range(a.shape[2])]))


def ms_ssim_db(value: float) -> float:
    """-10 log10(1 - MS-SSIM); +inf at 1."""
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


def camera_metrics(original: CameraFrame, decoded: CameraFrame, payload_bytes: int) -> dict:
    """bpp, PSNR, MS-SSIM (None when the image is too small for 5 scales), exactness."""
    if decoded.encoding != original.encoding:
        raise InvalidFrameError(
            f"decoded encoding {decoded.encoding} differs from the original {original.encoding}")
    a, b = original.pixels, decoded.pixels
    out = {"bpp": 8.0 * payload_bytes / (original.height * original.width),
           "psnr": psnr(a, b), "exact": bool(np.array_equal(a, b))}
    if min(a.shape[:2]) >= MS_SSIM_MIN_SIDE:
        value = ms_ssim(a, b)
        out["ms_ssim"] = value
        out["ms_ssim_db"] = ms_ssim_db(value)
    else:
        out["ms_ssim"] = out["ms_ssim_db"] = None
    return out


# --- point clouds ----------------------------------------------------------------------


def _finite_rows(xyz: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(xyz), axis=1)


def correspondence_errors(original: np.ndarray, decoded: np.ndarray) -> dict:
    """Euclidean error between point i of each N x 3 array (order preserved)."""
    a, b = np.asarray(original, np.float64), np.asarray(decoded, np.float64)
    if a.shape != b.shape:
        raise InvalidFrameError(
            f"clouds differ in size ({a.shape} vs {b.shape}); corresponding-point errors "
            "need a codec that keeps every point in order")
    fa, fb = _finite_rows(a), _finite_rows(b)
    both = fa & fb
    d = np.linalg.norm(a[both] - b[both], axis=1)
    return {"max_error": float(d.max()) if d.size else 0.0,
            "mean_error": float(d.mean()) if d.size else 0.0,
            "rms_error": float(np.sqrt(np.mean(d * d))) if d.size else 0.0,
            "nan_mismatch": int(np.count_nonzero(fa != fb))}


def _nn_distances(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    dist, _ = cKDTree(dst).query(src, k=1)
    return dist


def bounding_box_diagonal(xyz: np.ndarray) -> float:
    pts = np.asarray(xyz, np.float64)
    pts = pts[_finite_rows(pts)]
    if len(pts) == 0:
        return 0.0
    return float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))


def geometry_distances(original: np.ndarray, decoded: np.ndarray,
                       peak: float | None = None) -> dict:
    """Chamfer distance and D1 PSNR between two clouds (order-free); NaN points skipped."""
    a = np.asarray(original, np.float64)
    b = np.asarray(decoded, np.float64)
    a, b = a[_finite_rows(a)], b[_finite_rows(b)]
    if len(a) == 0 or len(b) == 0:
        if len(a) == len(b):
            return {"chamfer": 0.0, "d1_mse": 0.0, "d1_psnr": math.inf, "d1_peak": peak}
        raise InvalidFrameError(
            f"one cloud has no finite points ({len(a)} vs {len(b)}): no geometric distance")
    d_ab, d_ba = _nn_distances(a, b), _nn_distances(b, a)
    d1_mse = max(float(np.mean(d_ab ** 2)), float(np.mean(d_ba ** 2)))
    p = bounding_box_diagonal(a) if peak is None else float(peak)
    d1_psnr = math.inf if d1_mse == 0 else (
        10.0 * math.log10(3.0 * p * p / d1_mse) if p > 0 else -math.inf)
    return {"chamfer": 0.5 * (float(d_ab.mean()) + float(d_ba.mean())), "d1_mse": d1_mse,
            "d1_psnr": d1_psnr, "d1_peak": p}


def field_max_errors(original: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """Largest absolute error per field of two structured point arrays (finite values)."""
    out = {}
    for name in original.dtype.names:
        if decoded.dtype.names is None or name not in decoded.dtype.names:
            raise InvalidFrameError(f"decoded cloud lost field {name!r}")
        a = original[name].astype(np.float64).reshape(len(original), -1)
        b = decoded[name].astype(np.float64).reshape(len(decoded), -1)
        ok = np.isfinite(a) & np.isfinite(b)
        out[name] = float(np.abs(a[ok] - b[ok]).max()) if ok.any() else 0.0
    return out


def cloud_metrics(original: PointCloudFrame, decoded: PointCloudFrame, payload_bytes: int,
                  *, peak: float | None = None, geometry: bool = True) -> dict:
    """Rate and distortion of a decoded lidar/radar cloud.

    Corresponding-point errors and per-field errors are reported when the
    decoded cloud has the same number of points (codecs here keep order);
    Chamfer and D1 PSNR (``geometry``) need no correspondence.
    """
    n = original.num_points
    out: dict = {"points": n, "bits_per_point": 8.0 * payload_bytes / n if n else math.inf}
    a, b = original.xyz(), decoded.xyz()
    if decoded.num_points == n:
        out.update(correspondence_errors(a, b))
        out["field_max_error"] = field_max_errors(original.points, decoded.points)
        out["exact"] = bool(original.points.tobytes() == decoded.points.tobytes())
    else:
        out["exact"] = False
    if geometry:
        out.update(geometry_distances(a, b, peak))
    return out


# --- segmentation ----------------------------------------------------------------------


def confusion_matrix(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = truth; void truth ids ignored."""
    pred, true = np.asarray(predicted), np.asarray(truth)
    if pred.shape != true.shape:
        raise InvalidFrameError(f"class map {pred.shape} and label map {true.shape} differ "
                                "in shape; segment the frame at the labels' size")
    valid = (true >= 0) & (true < num_classes)
    pred_valid = pred[valid].astype(np.int64)
    if pred_valid.size and (pred_valid.min() < 0 or pred_valid.max() >= num_classes):
        raise InvalidFrameError(f"predicted class ids must lie in 0..{num_classes - 1}, got "
                                f"{pred_valid.min()}..{pred_valid.max()}")
    index = true[valid].astype(np.int64) * num_classes + pred_valid
    return np.bincount(index, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def iou_from_confusion(confusion: np.ndarray) -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU); classes absent from truth and prediction are NaN and
    left out of the mean. mIoU is NaN when no class occurs at all."""
    conf = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    miou = float(np.nanmean(iou)) if np.any(union > 0) else math.nan
    return miou, iou


def segmentation_metrics(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> dict:
    """Per-frame record entries: the confusion matrix (nested lists, JSON-ready) and
    the frame's own mIoU. Summaries recompute mIoU from the summed matrices."""
    conf = confusion_matrix(predicted, truth, num_classes)
    return {"confusion": conf.tolist(), "frame_miou": iou_from_confusion(conf)[0]}
