"""Training and evaluation of the learned models (seeded, resumable, CPU or CUDA).

Checkpoint directory layout (written atomically after every epoch)::

    weights.safetensors   model weights incl. BatchNorm statistics (the release input)
    best.safetensors      weights of the best validation score so far (if validating)
    state.json            epoch, seed, settings, history, best score
    optimizer.pt          optimizer + RNG state; read only by this trainer (weights_only)

``--resume DIR`` continues from the last finished epoch with the same
augmentation stream, so a resumed run reproduces an uninterrupted one on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import ConfigError
from .backbone import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, Backbone
from .data import ImageSet, augment_batch, class_weights

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"


# ---------------------------------------------------------------- metrics

def confusion_matrix(pred: torch.Tensor, target: torch.Tensor,
                     num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = ground truth; ignore ids dropped."""
    valid = (target >= 0) & (target < num_classes)
    index = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(conf: np.ndarray | torch.Tensor) -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU). Classes absent from both truth and prediction are NaN
    and left out of the mean, as in the standard CamVid protocol."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    miou = float(np.nanmean(iou)) if np.any(union > 0) else float("nan")
    return miou, iou


@torch.no_grad()
def evaluate_backbone(model: Backbone, data: ImageSet, *, device: str = "cpu",
                      batch_size: int = 4) -> dict:
    """mIoU / per-class IoU / pixel accuracy at the data's native resolution."""
    if data.labels is None:
        raise ConfigError("evaluation needs label maps")
    model.eval()
    conf = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for start in range(0, len(data), batch_size):
        images = data.images[start:start + batch_size].to(device).float() / 255.0
        logits, _ = model(images)
        conf += confusion_matrix(logits.argmax(1).cpu(), data.labels[start:start + batch_size])
    miou, iou = iou_from_confusion(conf)
    accuracy = float(conf.diag().sum()) / max(1, int(conf.sum()))
    return {"miou": miou, "pixel_accuracy": accuracy,
            "per_class_iou": {name: (None if math.isnan(v) else float(v))
                              for name, v in zip(CLASS_NAMES, iou)},
            "frames": len(data)}


# ---------------------------------------------------------------- checkpoints

def save_weights(model: torch.nn.Module, path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, path)


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} does not exist")
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"weights {path.name} do not fit {type(model).__name__}: "
                          f"missing {missing[:5]}, unexpected {unexpected[:5]}")


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


# ---------------------------------------------------------------- backbone training

@dataclass
class BackboneTrainConfig:
    epochs: int = 100
    batch_size: int = 8
    crop: tuple[int, int] = (288, 384)
    scale_range: tuple[float, float] = (0.75, 1.5)
    lr: float = 4e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 5
    data: str = ""
    command: str = ""
    extra: dict = field(default_factory=dict)


def _lr_at(config: BackboneTrainConfig, step: int, total: int) -> float:
    warmup = min(200, total // 20)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return config.lr * (1 - (step - warmup) / max(1, total - warmup)) ** 0.9


def train_backbone(train_set: ImageSet, out_dir: str | Path, config: BackboneTrainConfig, *,
                   val_set: ImageSet | None = None, resume: str | Path | None = None,
                   progress: bool = True, max_steps: int | None = None) -> dict:
    """Train (or resume) the backbone; returns the final state dict (as in state.json)."""
    if train_set.labels is None:
        raise ConfigError("backbone training needs label maps")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {config.device} requested but CUDA is not available; use cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = Backbone().to(config.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    state = {"model": "backbone", "epoch": 0, "step": 0, "history": [], "best_miou": None,
             "config": asdict(config)}
    if resume is not None:
        resume = Path(resume)
        state = json.loads((resume / STATE_FILE).read_text())
        load_weights(model, resume / WEIGHTS_FILE)
        extra = torch.load(resume / OPTIMIZER_FILE, map_location=config.device, weights_only=True)
        optimizer.load_state_dict(extra["optimizer"])
        generator.set_state(extra["generator"])
        torch.set_rng_state(extra["torch_rng"])
        state["config"]["epochs"] = config.epochs  # allow extending a run
        state.setdefault("resumed", []).append({"at_epoch": state["epoch"], "command": config.command,
                                                "epochs": config.epochs})
        log.info("resumed from %s at epoch %d", resume, state["epoch"])
    state["train_frames"] = len(train_set)  # for the model card
    weights = class_weights(train_set.labels).to(config.device)
    steps_per_epoch = max(1, len(train_set) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    from tqdm import tqdm

    for epoch in range(state["epoch"], config.epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"backbone epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False, mininterval=5.0)
        loss_sum, started = 0.0, time.time()
        for i in bar:
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            images, labels = augment_batch(train_set.images[idx], train_set.labels[idx], config.crop,
                                           config.scale_range, generator)
            images, labels = images.to(config.device), labels.to(config.device)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(config, state["step"], total_steps)
            logits, _ = model(images)
            loss = F.cross_entropy(logits, labels, weight=weights, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state["step"] += 1
            loss_sum += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            if max_steps is not None and state["step"] >= max_steps:
                break
        record = {"epoch": epoch + 1, "loss": loss_sum / (i + 1), "seconds": time.time() - started}
        state["epoch"] = epoch + 1
        last = epoch + 1 == config.epochs
        if val_set is not None and (last or (epoch + 1) % config.eval_every == 0):
            metrics = evaluate_backbone(model, val_set, device=config.device)
            record["val_miou"] = metrics["miou"]
            if state["best_miou"] is None or metrics["miou"] > state["best_miou"]:
                state["best_miou"] = metrics["miou"]
                state["best_epoch"] = epoch + 1
                state["best_metrics"] = metrics
                save_weights(model, out / BEST_FILE, {"epoch": epoch + 1, "val_miou": metrics["miou"]})
        state["history"].append(record)
        log.info("epoch %d: %s", epoch + 1, json.dumps(record))
        save_weights(model, out / WEIGHTS_FILE, {"epoch": epoch + 1})
        tmp = out / (OPTIMIZER_FILE + ".tmp")
        torch.save({"optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, out / OPTIMIZER_FILE)
        _write_json(out / STATE_FILE, state)
        if max_steps is not None and state["step"] >= max_steps:
            break
    return state
