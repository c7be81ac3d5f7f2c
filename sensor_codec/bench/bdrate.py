"""Bjøntegaard delta rate and delta quality between two rate-distortion curves.

BD-rate (Bjøntegaard, VCEG-M33) is the average difference in log-rate
between a test curve and an anchor over the quality range both cover,
expressed as a percentage: -20 % means the test codec needs 20 % fewer bits
than the anchor for the same quality. Following the JVET/JCT-VC common test
conditions and the usual Python reference implementations (``piecewise=1``),
each curve is interpolated with a piecewise cubic Hermite (pchip) of
log(rate) against quality, which, unlike VCEG-M33's cubic polynomial, never
overshoots between points. The interpolants are integrated exactly (not
sampled) over the overlap.

BD-PSNR (or BD-quality in whatever unit the quality is) swaps the axes:
quality interpolated against log(rate), averaged over the common log-rate
range; positive means the test codec is better.

``rate_at_quality`` reads one curve at a target quality with the same
interpolation (no extrapolation beyond the measured points).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

from ..errors import ConfigError


def _curve(x: Sequence[float], y: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a curve and sort it by x; equal x values are averaged."""
    xs, ys = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if xs.shape != ys.shape:
        raise ConfigError(f"{what}: {len(xs)} x values but {len(ys)} y values")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ConfigError(f"{what}: every point must be finite (a lossless point with "
                          f"infinite PSNR cannot be on a BD curve); got x={xs}, y={ys}")
    uniq, inverse = np.unique(xs, return_inverse=True)
    if len(uniq) < 2:
        raise ConfigError(f"{what}: needs at least 2 points of distinct quality/rate, "
                          f"got {len(xs)} point(s) ({xs})")
    sums = np.bincount(inverse, weights=ys)
    counts = np.bincount(inverse)
    return uniq, sums / counts


def _log_rates(rates: Sequence[float], what: str) -> np.ndarray:
    r = np.asarray(rates, np.float64).ravel()
    if np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise ConfigError(f"{what}: rates must be positive and finite, got {r}")
    return np.log(r)


def _mean_difference(x_anchor, y_anchor, x_test, y_test, what: str,
                     x_is_log_rate: bool = False) -> float:
    """Mean of (test(x) - anchor(x)) over the x range both curves cover."""
    xa, ya = _curve(x_anchor, y_anchor, f"{what} anchor")
    xt, yt = _curve(x_test, y_test, f"{what} test")
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if hi <= lo:
        show = math.exp if x_is_log_rate else float
        axis = "rate" if x_is_log_rate else "quality"
        raise ConfigError(
            f"{what}: the curves do not overlap in {axis} (anchor spans "
            f"{show(xa[0]):.4g}..{show(xa[-1]):.4g}, test spans {show(xt[0]):.4g}.."
            f"{show(xt[-1]):.4g}); sweep settings until they do")
    fa, ft = PchipInterpolator(xa, ya), PchipInterpolator(xt, yt)
    return (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)


def bd_rate(anchor_rates: Sequence[float], anchor_quality: Sequence[float],
            test_rates: Sequence[float], test_quality: Sequence[float]) -> float:
    """Average rate difference of test vs anchor at equal quality, in percent."""
    diff = _mean_difference(anchor_quality, _log_rates(anchor_rates, "BD-rate anchor"),
                            test_quality, _log_rates(test_rates, "BD-rate test"), "BD-rate")
    return (math.exp(diff) - 1.0) * 100.0


def bd_quality(anchor_rates: Sequence[float], anchor_quality: Sequence[float],
               test_rates: Sequence[float], test_quality: Sequence[float]) -> float:
    """Average quality difference (e.g. BD-PSNR in dB) of test vs anchor at equal rate."""
    return _mean_difference(_log_rates(anchor_rates, "BD-PSNR anchor"), anchor_quality,
                            _log_rates(test_rates, "BD-PSNR test"), test_quality, "BD-PSNR",
                            x_is_log_rate=True)


bd_psnr = bd_quality


def rate_at_quality(rates: Sequence[float], quality: Sequence[float],
                    target: float) -> float | None:
    """Rate at which the curve reaches ``target`` quality, by pchip on log-rate.

    None when the target lies outside the measured quality range.
    """
    q, log_r = _curve(quality, _log_rates(rates, "rate_at_quality"), "rate_at_quality")
    if not q[0] <= target <= q[-1]:
        return None
    return float(math.exp(PchipInterpolator(q, log_r)(target)))


def quality_overlap(anchor_quality: Sequence[float], test_quality: Sequence[float]) -> dict:
    """The quality range two curves share, a BD-rate's domain, and how much of
    each curve's own range it covers (0..1; 0 when they do not overlap).

    A BD-rate averaged over a small shared range says little about the rest of
    either curve; callers report these fractions beside it.
    """
    a = np.asarray(anchor_quality, np.float64).ravel()
    t = np.asarray(test_quality, np.float64).ravel()
    a, t = a[np.isfinite(a)], t[np.isfinite(t)]
    if a.size < 2 or t.size < 2:
        raise ConfigError(f"quality_overlap needs 2+ finite qualities per curve, got "
                          f"{a.size} (anchor) and {t.size} (test)")
    lo, hi = max(a.min(), t.min()), min(a.max(), t.max())
    width = max(hi - lo, 0.0)

    def share(q: np.ndarray) -> float:
        span = q.max() - q.min()
        return float(width / span) if span > 0 else 0.0

    return {"low": float(lo), "high": float(hi), "anchor_fraction": share(a),
            "test_fraction": share(t)}


# (modality, rate key, quality key) pairs a summary is compared on.
BD_METRICS = (("camera", "bpp", "psnr"), ("camera", "bpp", "ms_ssim_db"),
              ("lidar", "bits_per_point", "d1_psnr"), ("radar", "bits_per_point", "d1_psnr"))


def summary_curve(summary: Sequence[dict], codec: str, rate_key: str,
                  quality_key: str) -> tuple[list[float], list[float]]:
    """(rates, qualities) of one codec's rows with finite values, sorted by rate."""
    pts = sorted((row[rate_key], row[quality_key]) for row in summary
                 if row["codec"] == codec and isinstance(row.get(rate_key), (int, float))
                 and isinstance(row.get(quality_key), (int, float))
                 and math.isfinite(row[rate_key]) and math.isfinite(row[quality_key]))
    return [p[0] for p in pts], [p[1] for p in pts]


def compare_codecs(summary: Sequence[dict], anchor: str, test: str) -> list[dict]:
    """BD-rate and BD-quality of ``test`` against ``anchor`` on every metric of
    every modality both codecs were run on.

    A delta that cannot be computed (fewer than 2 lossy points, no overlap in
    quality for BD-rate or in rate for BD-quality) is given as an
    ``bd_rate_error`` / ``bd_quality_error`` string instead of a number.
    """
    out = []
    for modality, rate_key, quality_key in BD_METRICS:
        rows = [r for r in summary if r.get("modality") == modality]
        if not any(r["codec"] == anchor for r in rows) or not any(r["codec"] == test
                                                                  for r in rows):
            continue
        a = summary_curve(rows, anchor, rate_key, quality_key)
        t = summary_curve(rows, test, rate_key, quality_key)
        row = {"anchor": anchor, "test": test, "modality": modality, "rate": rate_key,
               "quality": quality_key}
        short = [f"{name} has {len(c[0])}" for name, c in ((anchor, a), (test, t))
                 if len(c[0]) < 2]
        if short:
            row["bd_rate_error"] = row["bd_quality_error"] = (
                f"{' and '.join(short)} point(s) of finite {quality_key} (lossless points "
                "have infinite quality); a BD curve needs 2+")
            out.append(row)
            continue
        try:
            row["bd_rate_percent"] = bd_rate(a[0], a[1], t[0], t[1])
        except ConfigError as exc:
            row["bd_rate_error"] = str(exc)
        try:
            row["bd_quality"] = bd_quality(a[0], a[1], t[0], t[1])
        except ConfigError as exc:
            row["bd_quality_error"] = str(exc)
        out.append(row)
    return out
