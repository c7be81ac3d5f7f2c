"""Training data for the learned models: CamVid-style folders or rosbags, held in memory.

Folder layout (CamVid's): ``DIR/<split>/*.png`` images and ``DIR/<split>annot/*.png``
label maps with the same file names (one class id per pixel, 11 = void).
``--data`` may name the root (``DIR``, with ``--split``) or the image folder itself.

A rosbag supplies images from one ``sensor_msgs/Image`` topic and, for the
backbone, label maps from a ``mono8`` Image topic with the same header stamps
(frames without a label are skipped for the backbone, used for the camera codec).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import ConfigError
from .backbone import IGNORE_INDEX, NUM_CLASSES

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


@dataclass
class ImageSet:
    """Images (N,3,H,W uint8) and optional labels (N,H,W uint8), all one size."""

    images: torch.Tensor
    labels: torch.Tensor | None
    names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _read_image(path: Path) -> np.ndarray:
    import imagecodecs  # local: only needed when reading files

    data = imagecodecs.imread(str(path))
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    return np.ascontiguousarray(data[..., :3])


def _resolve_folders(data: Path, split: str) -> tuple[Path, Path | None]:
    if (data / split).is_dir():
        image_dir = data / split
    elif data.is_dir():
        image_dir = data
    else:
        raise ConfigError(f"training data {str(data)!r} is neither a folder nor a rosbag; "
                          "pass a CamVid-style folder (images + <name>annot) or a bag")
    label_dir = image_dir.parent / f"{image_dir.name}annot"
    return image_dir, (label_dir if label_dir.is_dir() else None)


def load_folder(data: str | Path, split: str = "train", *, need_labels: bool = True,
                limit: int | None = None) -> ImageSet:
    """All images of a CamVid-style folder (same size required) into memory."""
    image_dir, label_dir = _resolve_folders(Path(data), split)
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(image_dir)!r}")
    if need_labels and label_dir is None:
        raise ConfigError(f"no label folder {str(image_dir.parent / (image_dir.name + 'annot'))!r} "
                          "next to the images; the backbone needs label maps")
    images, labels = [], []
    for path in files:
        image = _read_image(path)
        if images and image.shape != images[0].shape:
            raise ConfigError(f"{path.name} is {image.shape[1]}x{image.shape[0]}, the first image is "
                              f"{images[0].shape[1]}x{images[0].shape[0]}; resize the folder to one size")
        images.append(image)
        if label_dir is not None:
            label_path = label_dir / path.name
            if not label_path.is_file():
                raise ConfigError(f"label map {str(label_path)!r} missing for image {path.name}")
            label = _read_mono(label_path)
            if label.ndim == 3:
                label = label[..., 0]
            if label.shape != image.shape[:2]:
                raise ConfigError(f"label {label_path.name} is {label.shape[::-1]}, image is "
                                  f"{image.shape[1::-1]}")
            labels.append(label)
    image_t = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    label_t = torch.from_numpy(np.stack(labels)) if labels else None
    if label_t is not None:
        label_t = sanitise_labels(label_t)
    return ImageSet(image_t, label_t, [p.name for p in files])


def _read_mono(path: Path) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.imread(str(path)))


def sanitise_labels(labels: torch.Tensor) -> torch.Tensor:
    """Ids outside 0..NUM_CLASSES-1 become the ignore id."""
    labels = labels.clone()
    labels[labels >= NUM_CLASSES] = IGNORE_INDEX
    return labels


def load_bag(path: str | Path, image_topic: str, label_topic: str | None = None, *,
             need_labels: bool = True, limit: int | None = None) -> ImageSet:
    """Images (and mono8 label maps matched by header stamp) from a rosbag."""
    from ..bag.io import deserialize, read_messages  # local: rosbags only when used
    from ..messages import image_to_frame

    topics = [image_topic] + ([label_topic] if label_topic else [])
    images: dict[int, np.ndarray] = {}
    labels: dict[int, np.ndarray] = {}
    for msg in read_messages(path, topics):
        frame = image_to_frame(deserialize(msg.data, msg.msgtype))
        if msg.topic == image_topic:
            pixels = frame.pixels
            if frame.encoding in ("bgr8", "bgra8"):
                pixels = pixels[..., 2::-1]
            elif frame.encoding == "mono8":
                pixels = np.repeat(pixels[..., None], 3, axis=2)
            elif frame.encoding not in ("rgb8", "rgba8"):
                raise ConfigError(f"image topic {image_topic!r} has encoding {frame.encoding!r}; "
                                  "training reads rgb8/bgr8/rgba8/bgra8/mono8")
            images[frame.stamp_ns] = np.ascontiguousarray(pixels[..., :3])
        else:
            if frame.encoding != "mono8":
                raise ConfigError(f"label topic {label_topic!r} must be mono8, got {frame.encoding!r}")
            labels[frame.stamp_ns] = frame.pixels
    stamps = sorted(images)
    if need_labels:
        stamps = [s for s in stamps if s in labels]
    if limit is not None:
        stamps = stamps[:limit]
    if not stamps:
        raise ConfigError(f"bag {str(path)!r} has no usable frames on {image_topic!r}"
                          + (f" with labels on {label_topic!r}" if need_labels else ""))
    shape = images[stamps[0]].shape
    stamps = [s for s in stamps if images[s].shape == shape]
    image_t = torch.from_numpy(np.stack([images[s] for s in stamps])).permute(0, 3, 1, 2).contiguous()
    label_t = (sanitise_labels(torch.from_numpy(np.stack([labels[s] for s in stamps])))
               if need_labels else None)
    return ImageSet(image_t, label_t, [str(s) for s in stamps])


def load_training_data(data: str | Path, split: str = "train", *, image_topic: str = "",
                       label_topic: str = "", need_labels: bool = True,
                       limit: int | None = None) -> ImageSet:
    """A folder or a bag (a bag is a folder holding metadata.yaml, or an .mcap/.db3 file)."""
    path = Path(data)
    if not path.exists():
        raise ConfigError(f"training data {str(path)!r} does not exist")
    is_bag = (path / "metadata.yaml").is_file() or path.suffix in (".mcap", ".db3")
    if is_bag:
        if not image_topic:
            raise ConfigError(f"{str(path)!r} is a rosbag: pass --image-topic"
                              + (" and --label-topic" if need_labels else ""))
        if need_labels and not label_topic:
            raise ConfigError("training the backbone from a bag needs --label-topic (mono8 label maps)")
        return load_bag(path, image_topic, label_topic or None, need_labels=need_labels, limit=limit)
    return load_folder(path, split, need_labels=need_labels, limit=limit)


def augment_batch(images: torch.Tensor, labels: torch.Tensor | None, crop: tuple[int, int],
                  scale_range: tuple[float, float], generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random scale, crop (padding with void), horizontal flip and mild colour jitter.

    ``images`` uint8 (B,3,H,W) -> float [0,1] (B,3,crop_h,crop_w); labels long.
    """
    crop_h, crop_w = crop
    out_images, out_labels = [], []
    for i in range(images.shape[0]):
        u = torch.rand(6, generator=generator)
        scale = scale_range[0] + float(u[0]) * (scale_range[1] - scale_range[0])
        h, w = images.shape[2:]
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        image = F.interpolate(images[i:i + 1].float() / 255.0, size=(new_h, new_w), mode="bilinear",
                              align_corners=False, antialias=scale < 1)[0]
        label = None
        if labels is not None:
            label = F.interpolate(labels[i:i + 1, None].float(), size=(new_h, new_w),
                                  mode="nearest")[0, 0].long()
        pad_h, pad_w = max(0, crop_h - new_h), max(0, crop_w - new_w)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            if label is not None:
                label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(u[1] * (image.shape[1] - crop_h + 1))
        left = int(u[2] * (image.shape[2] - crop_w + 1))
        image = image[:, top:top + crop_h, left:left + crop_w]
        if label is not None:
            label = label[top:top + crop_h, left:left + crop_w]
        if u[3] < 0.5:
            image = image.flip(-1)
            if label is not None:
                label = label.flip(-1)
        # Brightness and contrast jitter of +-20 %.
        brightness = 0.8 + 0.4 * float(u[4])
        contrast = 0.8 + 0.4 * float(u[5])
        mean = image.mean()
        image = ((image - mean) * contrast + mean * brightness).clamp(0.0, 1.0)
        out_images.append(image)
        if label is not None:
            out_labels.append(label)
    return torch.stack(out_images), (torch.stack(out_labels) if labels is not None else None)


def class_weights(labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """ENet-style weights 1 / ln(1.02 + frequency), void excluded: rare classes count more."""
    counts = torch.bincount(labels.flatten().long(), minlength=num_classes + 1)[:num_classes].double()
    freq = counts / counts.sum().clamp(min=1)
    return (1.0 / torch.log(1.02 + freq)).float()
