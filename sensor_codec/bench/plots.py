"""Rate-distortion plots of a benchmark summary, as PNG files (matplotlib, Agg).

One line per codec through its settings, sorted by rate. Points whose
quality is not finite (lossless PSNR = inf) are left out of the line and
named in the legend instead, so a lossless codec still shows its rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, work without a display
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)

# (file stem, modality, rate key, quality key, x label, y label, log y axis)
RD_PLOTS = (
    ("psnr_vs_bpp", "camera", "bpp", "psnr", "bits per pixel", "PSNR RGB (dB)", False),
    ("ms_ssim_vs_bpp", "camera", "bpp", "ms_ssim_db", "bits per pixel",
     "MS-SSIM (dB) = -10 log10(1 - MS-SSIM)", False),
    ("lidar_max_error_vs_bits_per_point", "lidar", "bits_per_point", "max_error",
     "bits per point", "max point error (m)", True),
    ("lidar_chamfer_vs_bits_per_point", "lidar", "bits_per_point", "chamfer",
     "bits per point", "symmetric Chamfer distance (m)", True),
    ("lidar_d1_psnr_vs_bits_per_point", "lidar", "bits_per_point", "d1_psnr",
     "bits per point", "D1 PSNR (dB)", False),
    ("radar_max_error_vs_bits_per_point", "radar", "bits_per_point", "max_error",
     "bits per point", "max xyz error (m)", True),
)


def rd_plot(summary: Iterable[dict], rate_key: str, quality_key: str, path: str | Path, *,
            title: str = "", xlabel: str = "", ylabel: str = "", log_y: bool = False,
            modality: str | None = None,
            references: dict[str, float] | None = None) -> Path | None:
    """Write one RD plot; returns its path, or None when no row has both values.

    ``references``: labelled horizontal lines (e.g. the quality of the
    uncompressed original), drawn dashed across the plot.
    """
    lines: dict[str, list[tuple[float, float]]] = {}
    off_chart: dict[str, list[float]] = {}
    for row in summary:
        if modality is not None and row.get("modality") != modality:
            continue
        rate, quality = row.get(rate_key), row.get(quality_key)
        if rate is None or not math.isfinite(rate):
            continue
        if quality is None or not math.isfinite(quality) or (log_y and quality <= 0):
            if quality is not None:  # lossless / exact points
                off_chart.setdefault(row["codec"], []).append(rate)
            continue
        lines.setdefault(row["codec"], []).append((rate, quality))
    if not lines and not off_chart:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    try:
        for codec, pts in lines.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=codec)
        for codec, rates in off_chart.items():
            if codec not in lines:
                ax.plot([], [], linestyle="none", marker="x",
                        label=f"{codec}: exact at {min(rates):.3g} {xlabel or rate_key}")
        for label, value in (references or {}).items():
            ax.axhline(value, linestyle="--", color="grey", linewidth=1.0, label=label)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel or rate_key)
        ax.set_ylabel(ylabel or quality_key)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def write_rd_plots(summary: list[dict], out_dir: str | Path, title: str = "") -> list[Path]:
    """Every plot of ``RD_PLOTS`` the summary has data for; returns the files written."""
    written = []
    for stem, modality, rate_key, quality_key, xlabel, ylabel, log_y in RD_PLOTS:
        path = rd_plot(summary, rate_key, quality_key, Path(out_dir) / f"{stem}.png",
                       title=f"{title} ({modality})" if title else modality, xlabel=xlabel,
                       ylabel=ylabel, log_y=log_y, modality=modality)
        if path is not None:
            written.append(path)
    return written
