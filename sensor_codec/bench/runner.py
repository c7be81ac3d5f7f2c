"""Run codecs x settings over a stream of frames and collect rate-distortion records.

The benchmark is built on frame iterators: a *source* is any iterable of
``BenchFrame`` (a frame plus a stable id), so image folders, point-cloud
files, rosbags and the synthetic drive plug in the same way, and a new
source is one generator away. ``run_benchmark`` encodes and decodes every
frame with every ``CodecSetting`` whose codec handles the frame's modality,
timing both directions and measuring quality with ``metrics``; frames are
streamed, never all held in memory.

Results are plain dicts (JSON-ready): one record per (codec, setting, frame)
and one summary per (codec, setting) from ``summarise``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..codecs import Codec, codec_class, get_codec
from ..errors import BagError, ConfigError, InvalidFrameError
from ..frames import IMAGE_ENCODINGS, CameraFrame, Frame, Modality
from . import metrics

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class BenchFrame:
    """One input frame with the id it is reported under (file name, topic#index),
    and its per-pixel class labels when the source has them (CamVid)."""

    frame: Frame
    frame_key: str
    labels: np.ndarray | None = None


# --- codec settings ------------------------------------------------------------------


@dataclass(frozen=True)
class CodecSetting:
    """One codec at one point of its sweep."""

    codec: str
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        """``quality=50`` or ``qp=22,preset=fast``; ``default`` with no settings."""
        return ",".join(f"{k}={v}" for k, v in self.settings) or "default"

    def make(self) -> Codec:
        return get_codec(self.codec, **dict(self.settings))


def parse_codec_spec(spec: str) -> list[CodecSetting]:
    """``NAME[:KEY=V1,V2,...[:KEY2=...]]`` -> the Cartesian product of the values.

    Values are converted with the codec's declared ``Param`` types and
    validated, so a typo fails here, before any frame is read.
    Example: ``avif:quality=30,50,70:speed=8`` gives three settings.
    """
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"codec spec {spec!r} has no codec name; write NAME[:KEY=V1,V2,...]")
    cls = codec_class(name)
    params = {p.name: p for p in cls.params}
    axes: list[list[tuple[str, Any]]] = []
    for part in filter(None, rest.split(":")):
        key, eq, values = part.partition("=")
        key = key.strip()
        if not eq or not values.strip():
            raise ConfigError(f"codec spec {spec!r}: {part!r} must read KEY=V1,V2,...")
        if key not in params:
            raise ConfigError(f"codec {name!r} has no setting {key!r}; it takes "
                              f"{sorted(params) or 'none'}")
        axes.append([(key, _convert(params[key], v.strip(), spec)) for v in values.split(",")])
    settings = [CodecSetting(name, tuple(combo)) for combo in itertools.product(*axes)]
    for s in settings:
        s.make()  # validates ranges and choices now
    return settings


def _convert(param, text: str, spec: str) -> Any:
    if param.type is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"codec spec {spec!r}: {param.name}={text!r} is not true/false")
        return text.lower() in ("true", "1")
    try:
        value = param.type(text)
    except ValueError:
        raise ConfigError(f"codec spec {spec!r}: {param.name}={text!r} is not a valid "
                          f"{param.type.__name__}") from None
    return param.validate(value)  # range and choices, with the Param's own message


def parse_codec_specs(specs: Sequence[str]) -> list[CodecSetting]:
    out: list[CodecSetting] = []
    for spec in specs:
        for s in parse_codec_spec(spec):
            if s not in out:
                out.append(s)
    return out


# --- frame sources -------------------------------------------------------------------


def read_image(path: str | Path) -> CameraFrame:
    """An image file as a CameraFrame (rgb8, rgba8, mono8 or mono16)."""
    import imagecodecs
    path = Path(path)
    try:
        pixels = imagecodecs.imread(str(path))
    except (OSError, ValueError) as exc:  # imread reports every format's failure as ValueError
        raise InvalidFrameError(f"cannot read image {str(path)!r}: {exc}") from None
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        encoding = {np.dtype(np.uint8): "mono8", np.dtype(np.uint16): "mono16"}.get(pixels.dtype)
    elif pixels.ndim == 3 and pixels.dtype == np.uint8:
        encoding = {3: "rgb8", 4: "rgba8"}.get(pixels.shape[2])
    else:
        encoding = None
    if encoding is None:
        raise InvalidFrameError(f"image {str(path)!r} has shape {pixels.shape} and dtype "
                                f"{pixels.dtype}; supported: {sorted(IMAGE_ENCODINGS)}")
    return CameraFrame(pixels, encoding, 0, path.stem)


def list_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (sorted, not recursive) in folders."""
    paths = [Path(p) for p in paths]
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"image path {str(p)!r} does not exist")
    if not out:
        raise ConfigError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in "
                          f"{[str(p) for p in paths]}")
    return out


def image_frames(paths: Iterable[str | Path], limit: int | None = None) -> Iterator[BenchFrame]:
    for path in list_images(paths)[:limit]:
        yield BenchFrame(read_image(path), path.name)


def camvid_frames(root: str | Path, split: str = "val",
                  limit: int | None = None, *, labels: bool = False) -> Iterator[BenchFrame]:
    """CamVid RGB frames of one split (``train``, ``val``, ``test``), sorted by name.

    ``labels``: attach each frame's label map from ``SPLITannot/`` (same file
    name, one class id per pixel) as ``BenchFrame.labels``.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise ConfigError(f"{str(folder)!r} is not a folder; pass the CamVid root that holds "
                          f"{split}/ (e.g. ../shared/data/camvid)")
    if not labels:
        return image_frames([folder], limit)
    label_folder = Path(root) / f"{split}annot"
    if not label_folder.is_dir():
        raise ConfigError(f"no label folder {str(label_folder)!r} next to {str(folder)!r}; "
                          "CamVid keeps label maps in SPLITannot/")
    return _labelled_frames(list_images([folder])[:limit], label_folder)


def _labelled_frames(paths: list[Path], label_folder: Path) -> Iterator[BenchFrame]:
    for path in paths:
        label_path = label_folder / path.name
        if not label_path.is_file():
            raise ConfigError(f"label map {str(label_path)!r} missing for image {path.name}")
        label = read_image(label_path).pixels
        if label.ndim == 3:
            label = label[:, :, 0]
        frame = read_image(path)
        if label.shape != (frame.height, frame.width):
            raise ConfigError(f"label map {label_path.name} is {label.shape[1]}x{label.shape[0]}, "
                              f"its image is {frame.width}x{frame.height}")
        yield BenchFrame(frame, path.name, labels=label)


def pointcloud_frames(paths: Iterable[str | Path], limit: int | None = None, *,
                      fields: Sequence[str] | None = None,
                      modality: Modality | str = Modality.LIDAR) -> Iterator[BenchFrame]:
    """Point-cloud files (.bin, .pcd, .npy) read by ``sensor_codec.io.files``."""
    try:
        from ..io import files
    except ImportError as exc:
        raise ConfigError(f"point-cloud files need sensor_codec.io.files: {exc}") from None
    for path in list(map(Path, paths))[:limit]:
        frame = files.read_frame(path, Modality.parse(modality),
                                 fields=tuple(fields) if fields else None, frame_id=path.stem)
        yield BenchFrame(frame, path.name)


def bag_frames(path: str | Path, topics: Sequence[str] | None = None,
               limit: int | None = None) -> Iterator[BenchFrame]:
    """Image and PointCloud2 messages of a rosbag; ``limit`` counts per topic."""
    from .. import messages
    from ..bag import io as bag_io
    counts: dict[str, int] = {}
    for topic, msgtype, stamp_ns, data in bag_io.read_messages(path, topics):
        if msgtype not in ("sensor_msgs/msg/Image", "sensor_msgs/msg/PointCloud2"):
            continue
        if limit is not None and counts.get(topic, 0) >= limit:
            if topics is not None and all(counts.get(t, 0) >= limit for t in topics):
                return
            continue
        msg = bag_io.deserialize(data, msgtype)
        if msgtype == "sensor_msgs/msg/Image":
            frame = messages.image_to_frame(msg)
        else:
            frame = messages.pointcloud2_to_frame(msg)
        index = counts.get(topic, 0)
        counts[topic] = index + 1
        yield BenchFrame(frame, f"{topic}#{index}")
    if not counts:
        raise BagError(f"bag {str(path)!r} has no Image or PointCloud2 messages"
                       + (f" on {list(topics)}" if topics else ""))


def synthetic_frames(limit: int | None = 10, seed: int = 0,
                     **drive_options: Any) -> Iterator[BenchFrame]:
    """Matched camera (rgb8), lidar and radar frames of the built-in synthetic
    drive (``SyntheticDrive.frames``); ``limit`` counts steps (default 10).
    ``drive_options`` go to ``SyntheticDrive`` (e.g. ``camera_size``)."""
    from ..synthetic.drive import SyntheticDrive
    drive = SyntheticDrive(seed=seed, **drive_options)
    for step, sample in enumerate(drive.frames(10 if limit is None else limit)):
        for sensor, frame in sample.items():
            yield BenchFrame(frame, f"{sensor}#{step}")


# --- the run -------------------------------------------------------------------------


@dataclass
class BenchResult:
    """Per-frame records, the settings run and the frames no codec could take."""

    records: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    settings: list[CodecSetting] = field(default_factory=list)
    frames: int = 0

    def summary(self) -> list[dict]:
        return summarise(self.records)


def _modalities(setting: CodecSetting) -> frozenset[Modality]:
    return codec_class(setting.codec).modalities


def run_benchmark(source: Iterable[BenchFrame], settings: Sequence[CodecSetting], *,
                  geometry: bool = True, d1_peak: float | None = None,
                  progress=None, extra_metrics=None) -> BenchResult:
    """Encode + decode every frame with every applicable setting and measure it.

    A codec that refuses a frame (for instance alpha to a codec without it) is
    listed in ``skipped`` with its reason, and the run goes on.
    ``progress(frame_index, frame_key)`` is called per frame when given.
    ``extra_metrics(bench_frame, decoded_frame) -> dict`` adds entries to each
    record (outside the timed part), e.g. ``metrics.segmentation_metrics`` of
    a network's class map on the decoded frame against ``bench_frame.labels``.
    """
    if not settings:
        raise ConfigError("no codec settings to benchmark")
    codecs = [(s, s.make()) for s in settings]
    result = BenchResult(settings=list(settings))
    for index, item in enumerate(source):
        frame = item.frame
        result.frames += 1
        if progress is not None:
            progress(index, item.frame_key)
        applicable = [(s, c) for s, c in codecs if frame.modality in _modalities(s)]
        if not applicable:
            result.skipped.append({"frame": item.frame_key, "modality": frame.modality.label,
                                   "reason": "no selected codec handles this modality"})
            continue
        for setting, codec in applicable:
            try:
                record = measure(codec, frame, geometry=geometry, d1_peak=d1_peak,
                                 on_decoded=None if extra_metrics is None else
                                 functools.partial(extra_metrics, item))
            except InvalidFrameError as exc:
                result.skipped.append({"frame": item.frame_key, "codec": setting.codec,
                                       "setting": setting.label, "reason": str(exc)})
                log.warning("%s %s skipped %s: %s", setting.codec, setting.label,
                            item.frame_key, exc)
                continue
            record.update(codec=setting.codec, setting=setting.label,
                          settings=dict(setting.settings), frame=item.frame_key)
            result.records.append(record)
    return result


def measure(codec: Codec, frame: Frame, *, geometry: bool = True,
            d1_peak: float | None = None, on_decoded=None) -> dict:
    """Encode and decode one frame; rate, distortion and milliseconds both ways.

    ``on_decoded(decoded_frame) -> dict``, when given, adds its entries to the record.
    """
    t0 = time.perf_counter()
    payload = codec.encode(frame)
    t1 = time.perf_counter()
    decoded = codec.decode(payload)
    t2 = time.perf_counter()
    record: dict[str, Any] = {"modality": frame.modality.label, "bytes": len(payload),
                              "raw_bytes": frame.nbytes, "enc_ms": 1e3 * (t1 - t0),
                              "dec_ms": 1e3 * (t2 - t1)}
    if isinstance(frame, CameraFrame):
        record["pixels"] = frame.height * frame.width
        record.update(metrics.camera_metrics(frame, decoded, len(payload)))
    else:
        record.update(metrics.cloud_metrics(frame, decoded, len(payload),
                                            peak=d1_peak, geometry=geometry))
    if on_decoded is not None:
        record.update(on_decoded(decoded))
    return record


# --- aggregation ---------------------------------------------------------------------

_MEAN_KEYS = ("psnr", "ms_ssim", "chamfer", "d1_psnr", "enc_ms", "dec_ms")
_MAX_KEYS = ("max_error",)


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return math.inf if any(math.isinf(v) and v > 0 for v in values) else float(np.mean(values))


def summarise(records: Iterable[dict]) -> list[dict]:
    """One row per (codec, setting, modality), in first-seen order.

    Rates are totals over frames (bpp = all bits / all pixels, bits per point =
    all bits / all points); PSNR, MS-SSIM, Chamfer, D1 and times are means of
    the per-frame values; ``max_error`` and per-field errors are maxima;
    ``mean_error`` is the point-weighted mean. Records with a segmentation
    ``confusion`` matrix give ``miou`` and ``class_iou`` of the summed matrix.
    """
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:  # a codec for several modalities gets a row per modality
        groups.setdefault((r["codec"], r["setting"], r["modality"]), []).append(r)
    rows = []
    for (codec, setting, _), rs in groups.items():
        total_bytes = sum(r["bytes"] for r in rs)
        raw = sum(r["raw_bytes"] for r in rs)
        row: dict[str, Any] = {"codec": codec, "setting": setting, "settings": rs[0]["settings"],
                               "modality": rs[0]["modality"], "frames": len(rs),
                               "bytes": total_bytes, "ratio": raw / total_bytes,
                               "exact": all(r.get("exact", False) for r in rs)}
        if "pixels" in rs[0]:
            row["bpp"] = 8.0 * total_bytes / sum(r["pixels"] for r in rs)
            ms = [r.get("ms_ssim") for r in rs]
            row["ms_ssim_db"] = (None if any(v is None for v in ms)
                                 else metrics.ms_ssim_db(float(np.mean(ms))))
        else:
            points = sum(r["points"] for r in rs)
            row["points"] = points
            row["bits_per_point"] = 8.0 * total_bytes / points if points else math.inf
            if all("mean_error" in r for r in rs):
                row["mean_error"] = (sum(r["mean_error"] * r["points"] for r in rs) / points
                                     if points else 0.0)
            fields: dict[str, float] = {}
            for r in rs:
                for k, v in r.get("field_max_error", {}).items():
                    fields[k] = max(fields.get(k, 0.0), v)
            if fields:
                row["field_max_error"] = fields
        for key in _MEAN_KEYS:
            if any(key in r for r in rs):
                row[key] = _mean([r.get(key) for r in rs])
        for key in _MAX_KEYS:
            if all(key in r for r in rs):
                row[key] = max(r[key] for r in rs)
        if all("confusion" in r for r in rs):
            conf = np.sum([np.asarray(r["confusion"], np.int64) for r in rs], axis=0)
            row["miou"], class_iou = metrics.iou_from_confusion(conf)
            row["class_iou"] = [None if math.isnan(v) else float(v) for v in class_iou]
        rows.append(row)
    return rows


def json_ready(value: Any) -> Any:
    """Replace non-finite floats by None (strict JSON has no inf/NaN) throughout."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return json_ready(value.item())
    return value


__all__ = ["BenchFrame", "BenchResult", "CodecSetting", "bag_frames",
           "camvid_frames", "image_frames", "json_ready", "measure",
           "parse_codec_spec", "parse_codec_specs", "pointcloud_frames", "read_image",
           "run_benchmark", "summarise", "synthetic_frames"]
