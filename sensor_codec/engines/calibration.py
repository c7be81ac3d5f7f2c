"""int8 calibration data: real frames from an image folder or a rosbag, turned into
the exact feeds a graph receives in service.

The feeds are not rebuilt by hand: the project's CPU runtime codes each
calibration frame while a ``RecordingBackend`` keeps a copy of what it hands
to the graph being calibrated (padding, tap features, gain and quality maps,
dequantised latents for the decoder). So calibration sees the same
distributions as deployment, and this module cannot drift from the codec.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .shapes import Resolution

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


@dataclass(frozen=True)
class CalibrationSource:
    """Where calibration frames come from: a folder of images, or a bag and its image topic."""

    path: str
    topic: str = ""
    count: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"calibration needs at least 1 frame, got count={self.count}")

    @property
    def is_bag(self) -> bool:
        path = Path(self.path)
        return (path / "metadata.yaml").is_file() or path.suffix in (".mcap", ".db3")

    @property
    def identity(self) -> str:
        """Recorded in the engine key: other data, other engine."""
        return f"{Path(self.path).resolve()}|{self.topic}|{self.count}|{self.seed}"


def fit_to_resolution(rgb: np.ndarray, resolution: Resolution) -> np.ndarray:
    """Centre-crop ``rgb`` to the target aspect ratio, then resize (nearest) to it."""
    height, width = rgb.shape[:2]
    target_h, target_w = resolution.height, resolution.width
    # Largest crop with the target aspect ratio.
    if width * target_h > height * target_w:
        crop_w, crop_h = max(1, height * target_w // target_h), height
    else:
        crop_w, crop_h = width, max(1, width * target_h // target_w)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    cropped = rgb[top:top + crop_h, left:left + crop_w]
    rows = (np.arange(target_h) * crop_h // target_h).clip(0, crop_h - 1)
    cols = (np.arange(target_w) * crop_w // target_w).clip(0, crop_w - 1)
    return np.ascontiguousarray(cropped[rows][:, cols])


def folder_frames(folder: str | Path, count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``count`` RGB frames from an image folder, a seeded choice among the sorted files."""
    import imagecodecs  # local: only when reading files

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"calibration folder {str(root)!r} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"calibration folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    order = np.random.default_rng(seed).permutation(len(files))[:count]
    for index in sorted(order.tolist()):
        data = imagecodecs.imread(str(files[index]))
        if data.ndim == 2:
            data = np.repeat(data[..., None], 3, axis=2)
        yield np.ascontiguousarray(data[..., :3])


def bag_frames(path: str | Path, topic: str, count: int) -> Iterator[np.ndarray]:
    """The first ``count`` frames of an image topic of a rosbag, as RGB."""
    from ..bag.io import deserialize, read_messages  # local: rosbags only when used
    from ..messages import image_to_frame

    if not topic:
        raise ConfigError(f"{str(path)!r} is a rosbag: name its image topic (--calib-topic)")
    produced = 0
    for message in read_messages(path, [topic]):
        frame = image_to_frame(deserialize(message.data, message.msgtype))
        yield np.ascontiguousarray(frame.to_rgb8())
        produced += 1
        if produced >= count:
            return
    if produced == 0:
        raise ConfigError(f"bag {str(path)!r} has no messages on {topic!r}")


def source_frames(source: CalibrationSource) -> Iterator[np.ndarray]:
    if source.is_bag:
        return bag_frames(source.path, source.topic, source.count)
    return folder_frames(source.path, source.count, source.seed)


class RecordingBackend:
    """Wraps a backend; keeps a copy of the feeds given to ``graph``."""

    def __init__(self, inner, graph: str) -> None:
        self.inner = inner
        self.graph = graph
        self.name = getattr(inner, "name", "recording")
        self.release = getattr(inner, "release", None)
        self.recorded: list[dict[str, np.ndarray]] = []

    def input_names(self, graph: str) -> list[str]:
        return self.inner.input_names(graph)

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if graph == self.graph:
            self.recorded.append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.inner.run(graph, feeds)


def calibration_batches(feeds: Iterator[dict[str, np.ndarray]], input_names: list[str],
                        expected_shapes: dict[str, tuple[int, ...]], count: int
                        ) -> Iterator[dict[str, np.ndarray]]:
    """At most ``count`` feeds, each checked against the calibration profile's shapes
    and made contiguous float32 (what the int8 calibrator copies to the GPU)."""
    for produced, feed in enumerate(feeds):
        if produced >= count:
            return
        batch = {}
        for name in input_names:
            if name not in feed:
                raise ConfigError(f"calibration feed lacks input {name!r} (has {sorted(feed)})")
            array = np.ascontiguousarray(feed[name], dtype=np.float32)
            if tuple(array.shape) != tuple(expected_shapes[name]):
                raise ConfigError(f"calibration input {name!r} has shape {array.shape}, the calibration "
                                  f"profile expects {tuple(expected_shapes[name])}")
            batch[name] = array
        yield batch


def graph_feeds(graph: str, release, frames: Iterator[np.ndarray], resolution: Resolution, *,
                models: str | None = None, levels: list[int] | None = None,
                runtime_factory: Callable | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Feeds of ``graph`` (of ``release``) for each frame, recorded while the CPU
    runtime codes it at ``resolution``; quality levels cycle through ``levels``."""
    from ..learned.runtime import BackboneRunner

    if graph == "backbone":
        runner = BackboneRunner(release=release, backend="onnxruntime")
        recorder = RecordingBackend(runner.backend, graph)
        runner.backend = recorder
        for rgb in frames:
            runner.segment(fit_to_resolution(rgb, resolution))
            yield recorder.recorded.pop()
        return
    if graph == "fused_encoder":
        from .fused import fused_feeds, separate_runtime

        runtime = (runtime_factory or separate_runtime)(release)
        for i, rgb in enumerate(frames):
            level = (levels or list(range(runtime.levels)))[i % len(levels or range(runtime.levels))]
            yield fused_feeds(runtime, fit_to_resolution(rgb, resolution), level)
        return
    if graph not in ("encoder", "decoder"):
        raise ConfigError(f"no calibration recipe for graph {graph!r}")
    if runtime_factory is None:
        from ..learned.camera_runtime import LearnedCameraRuntime

        runtime = LearnedCameraRuntime(release=release, backend="onnxruntime")
    else:
        runtime = runtime_factory(release)
    recorder = RecordingBackend(runtime.backend, graph)
    runtime.backend = recorder
    cycle = levels or list(range(runtime.levels))
    for i, rgb in enumerate(frames):
        packed = runtime.compress(fit_to_resolution(rgb, resolution), cycle[i % len(cycle)])
        if graph == "decoder":
            runtime.decompress(packed.sections, packed.metadata, with_semantic=False)
        yield recorder.recorded.pop()
