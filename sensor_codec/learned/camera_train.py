"""Training of the learned camera codec on top of a frozen, released backbone.

Each step: random crops (multiples of 64), the frozen backbone gives the tap
features and the semantic map, every sample draws a quality level (and, half
of the time, the semantic quality map instead of the neutral one), and the
loss is ``bpp + lambda[level] * 255**2 * importance-weighted MSE``. The
importance weights come from ``config/semantic_importance.yaml`` and are
normalised to mean 1 per sample, so they move bits within a frame without
changing the overall trade-off.

Checkpoints use the backbone trainer's layout (``weights.safetensors`` with
``net.*`` keys, ``state.json``, ``optimizer.pt``), and are resumable.
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
from .backbone import Backbone
from .camera_codec import LAMBDAS, LEVELS, NEUTRAL_QMAP_LEVEL, CameraCodecNet
from .data import ImageSet, augment_batch
from .importance import QMAP_BLOCK, Importance, load_importance
from .train import OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE, _write_json, load_weights

log = logging.getLogger(__name__)


@dataclass
class CameraTrainConfig:
    epochs: int = 50
    batch_size: int = 8
    crop: tuple[int, int] = (192, 192)
    scale_range: tuple[float, float] = (0.6, 1.2)
    lr: float = 3e-4
    seed: int = 0
    device: str = "cpu"
    max_steps: int | None = None
    semantic_map_probability: float = 0.5
    # Step at which the synthesis switches to its integer grids (None: after 80 % of the run).
    integer_from_step: int | None = None
    init_from: str = ""          # start from a released model id (or folder of one)
    decoder_only: bool = False   # train only the synthesis and inverse gains (rate unchanged)
    # With init_from a release of fewer levels: its gains become the top levels and the missing
    # low levels get its lowest gain times these factors (ascending), e.g. (0.4, 0.6).
    low_level_factors: tuple[float, ...] = ()
    semantic_loss_weight: float = 0.0   # backbone cross-entropy on the reconstruction
    data: str = ""
    command: str = ""
    extra: dict = field(default_factory=dict)


def load_backbone_for_training(weights: str | None) -> tuple[Backbone, str]:
    """(frozen backbone, its model id). ``weights``: a .safetensors path, a model id or None."""
    from .backbone_graphs import backbone_from_tensors
    from .release import model_id_for, resolve_release

    if weights and weights.endswith(".safetensors"):
        backbone = Backbone()
        load_weights(backbone, weights)
        tensors = {k: v.numpy() for k, v in backbone.state_dict().items()}
        return backbone.eval(), model_id_for("backbone", tensors)
    release = resolve_release("backbone", weights)
    return backbone_from_tensors(release.load_tensors()), release.model_id


def quality_levels_torch(pixel_weights: torch.Tensor, importance: Importance) -> torch.Tensor:
    """(B,H,W) importance -> (B,H/32,W/32) levels, the torch twin of Importance.quality_levels."""
    mean = F.avg_pool2d(pixel_weights[:, None], QMAP_BLOCK)[:, 0]
    peak = F.max_pool2d(pixel_weights[:, None], QMAP_BLOCK)[:, 0]
    score = torch.maximum(mean, importance.fraction_weight * peak)
    return torch.bucketize(score, torch.tensor(importance.thresholds), right=True)


def pixel_weights_and_qmap(semantic: torch.Tensor, use_semantic_map: torch.Tensor, importance: Importance
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel importance (B,H,W) and the latent-resolution quality map (B,H/16,W/16)."""
    table = torch.tensor(np.append(importance.weights, 1.0), dtype=torch.float32, device=semantic.device)
    pixel_weights = table[semantic.clamp(max=len(table) - 1)]
    qmap = quality_levels_torch(pixel_weights, importance)
    qmap = torch.where(use_semantic_map[:, None, None], qmap, torch.full_like(qmap, NEUTRAL_QMAP_LEVEL))
    return pixel_weights, qmap.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)


def codec_loss(net: CameraCodecNet, images: torch.Tensor, tap: torch.Tensor, semantic: torch.Tensor,
               levels: torch.Tensor, use_semantic_map: torch.Tensor, importance: Importance,
               backbone: Backbone | None = None, semantic_weight: float = 0.0
               ) -> tuple[torch.Tensor, dict]:
    """bpp + lambda * 255**2 * importance-weighted MSE, plus (``semantic_weight`` > 0) the
    frozen backbone's cross-entropy on the reconstruction against its map of the original:
    the decoder learns to keep what segmentation needs at low rates."""
    pixel_weights, qmap = pixel_weights_and_qmap(semantic, use_semantic_map, importance)
    out = net(images, tap, levels, qmap)
    pixels = images.shape[2] * images.shape[3]
    bits = -(torch.log2(out["y_likelihood"]).sum(dim=(1, 2, 3))
             + torch.log2(out["z_likelihood"]).sum(dim=(1, 2, 3)))
    bpp = bits / pixels
    weights = pixel_weights / pixel_weights.mean(dim=(1, 2), keepdim=True)
    mse = ((out["x_hat"] - images) ** 2).mean(dim=1)
    distortion = (weights * mse).mean(dim=(1, 2))
    lambdas = torch.tensor(LAMBDAS)[levels]
    loss = (bpp + lambdas * 255.0 ** 2 * distortion).mean()
    stats = {}
    if semantic_weight > 0 and backbone is not None:
        logits, _ = backbone(out["x_hat"])
        cross_entropy = F.cross_entropy(logits, semantic.long())
        loss = loss + semantic_weight * cross_entropy
        stats["semantic_ce"] = float(cross_entropy.detach())
    plain_mse = mse.mean(dim=(1, 2)).detach()
    psnr = (10 * torch.log10(1.0 / plain_mse.clamp(min=1e-10))).mean()
    return loss, {"bpp": float(bpp.mean().detach()), "psnr": float(psnr), "loss": float(loss.detach()), **stats}


def train_camera(train_set: ImageSet, out_dir: str | Path, config: CameraTrainConfig, *,
                 backbone_weights: str | None = None, resume: str | Path | None = None,
                 progress: bool = True, importance: Importance | None = None) -> dict:
    if any(c % 64 for c in config.crop):
        raise ConfigError(f"camera training crops must be multiples of 64, got {config.crop}")
    if not config.semantic_loss_weight >= 0:
        raise ConfigError(f"--semantic-loss must be >= 0, got {config.semantic_loss_weight}")
    if config.integer_from_step is not None and config.integer_from_step < 0:
        raise ConfigError(f"--integer-from-step must be >= 0, got {config.integer_from_step}")
    if config.low_level_factors and not config.init_from:
        raise ConfigError("--add-low-levels extends a released model: give it with --init-from")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {config.device} requested but CUDA is not available; use cpu")
    importance = importance or load_importance()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    backbone, backbone_id = load_backbone_for_training(backbone_weights)
    backbone = backbone.to(config.device).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    net = CameraCodecNet()
    parent = None
    if config.init_from:
        parent = _init_from_release(net, config.init_from, backbone_id, config.low_level_factors)
    net = net.to(config.device)
    trainable = [p for name, p in net.named_parameters()
                 if not config.decoder_only or name.startswith("g_s.") or name == "log_inv_gain"]
    for p in net.parameters():
        p.requires_grad_(any(p is t for t in trainable))
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    state = {"model": "camera", "epoch": 0, "step": 0, "history": [], "backbone": backbone_id,
             "config": asdict(config)}
    if parent:
        state["parent"] = parent
    if resume is not None:
        resume = Path(resume)
        state = json.loads((resume / STATE_FILE).read_text())
        if state.get("backbone") != backbone_id:
            raise ConfigError(f"checkpoint {resume} was trained on backbone {state.get('backbone')}, "
                              f"not {backbone_id}; pass --backbone with the same weights")
        _load_net(net, resume / WEIGHTS_FILE)
        extra = torch.load(resume / OPTIMIZER_FILE, map_location=config.device, weights_only=True)
        optimizer.load_state_dict(extra["optimizer"])
        generator.set_state(extra["generator"])
        torch.set_rng_state(extra["torch_rng"])
        state["config"]["epochs"] = config.epochs
        state["config"]["max_steps"] = config.max_steps
        state.setdefault("resumed", []).append({"at_step": state["step"], "command": config.command,
                                                "max_steps": config.max_steps})
    state["train_frames"] = len(train_set)  # for the model card
    steps_per_epoch = max(1, len(train_set) // config.batch_size)
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    integer_from = (config.integer_from_step if config.integer_from_step is not None
                    else (0 if config.init_from else int(0.8 * total_steps)))
    from tqdm import tqdm

    done = state["step"] >= total_steps
    while not done and state["epoch"] < config.epochs:
        net.train()
        order = torch.randperm(len(train_set), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"camera epoch {state['epoch'] + 1}", disable=not progress,
                   leave=False, mininterval=5.0)
        sums = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0}
        if config.semantic_loss_weight > 0:
            sums["semantic_ce"] = 0.0
        started, count = time.time(), 0
        for i in bar:
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            images, _ = augment_batch(train_set.images[idx], None, config.crop, config.scale_range, generator)
            images = images.to(config.device)
            levels = torch.randint(0, LEVELS, (images.shape[0],), generator=generator)
            use_map = torch.rand(images.shape[0], generator=generator) < config.semantic_map_probability
            with torch.no_grad():
                logits, tap = backbone(images)
                semantic = logits.argmax(1)
            # Cosine decay over the run keeps the last steps stable.
            lr = config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, state["step"] / total_steps)))
            for group in optimizer.param_groups:
                group["lr"] = lr
            if not bool(net.g_s.calibrated) and state["step"] >= integer_from:
                state["synthesis_calibration"] = _calibrate_synthesis(
                    net, backbone, train_set, config, generator, importance)
                state["integer_from_step"] = state["step"]
                log.info("synthesis on its integer grids from step %d", state["step"])
            loss, stats = codec_loss(net, images, tap, semantic, levels.to(config.device),
                                     use_map.to(config.device), importance, backbone,
                                     config.semantic_loss_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            state["step"] += 1
            count += 1
            for key in sums:
                sums[key] += stats[key]
            bar.set_postfix(loss=f"{stats['loss']:.3f}", bpp=f"{stats['bpp']:.3f}")
            if state["step"] >= total_steps:
                done = True
                break
        state["epoch"] += 1
        record = {"epoch": state["epoch"], "step": state["step"], "seconds": time.time() - started,
                  **{k: v / max(1, count) for k, v in sums.items()}}
        state["history"].append(record)
        log.info("camera epoch %d: %s", state["epoch"], json.dumps(record))
        save_net(net, out / WEIGHTS_FILE)
        tmp = out / (OPTIMIZER_FILE + ".tmp")
        torch.save({"optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, out / OPTIMIZER_FILE)
        _write_json(out / STATE_FILE, state)
    return state


def _init_from_release(net: CameraCodecNet, model: str, backbone_id: str,
                       low_level_factors: tuple[float, ...] = ()) -> dict:
    """Load a released model's weights; an older float-synthesis release lacks only the
    synthesis grid exponents, which calibration sets. Returns the parent's id and training
    record, for the model card."""
    from .release import resolve_release

    # A folder means its default camera model; anything else is a model id among the shipped ones.
    release = resolve_release("camera", None, model) if Path(model).is_dir() else resolve_release("camera", model)
    if release.manifest.get("backbone") != backbone_id:
        raise ConfigError(f"model {release.model_id} was trained on backbone {release.manifest.get('backbone')}, "
                          f"not {backbone_id}")
    state = {k[len("net."):]: torch.from_numpy(np.asarray(v, dtype=np.float32))
             for k, v in release.load_tensors().items() if k.startswith("net.")}
    held = state["log_gain"].shape[0]
    if held + len(low_level_factors) != LEVELS:
        raise ConfigError(f"model {release.model_id} has {held} levels; with {len(low_level_factors)} added "
                          f"low levels that is not this network's {LEVELS} (use --add-low-levels)")
    if low_level_factors:
        if any(not 0 < f < 1 for f in low_level_factors) or list(low_level_factors) != sorted(low_level_factors):
            raise ConfigError(f"low-level gain factors {low_level_factors} must be ascending, in (0, 1)")
        shift = torch.log(torch.tensor(low_level_factors))[:, None]
        state["log_gain"] = torch.cat([state["log_gain"][:1] + shift, state["log_gain"]])
        state["log_inv_gain"] = torch.cat([state["log_inv_gain"][:1] - shift, state["log_inv_gain"]])
    result = net.load_state_dict(state, strict=False)
    allowed = {k for k in net.state_dict() if k.startswith("g_s.") and "layers." not in k}
    if result.unexpected_keys or set(result.missing_keys) - allowed:
        raise ConfigError(f"model {release.model_id} does not fit this network: missing "
                          f"{sorted(set(result.missing_keys) - allowed)}, unexpected {result.unexpected_keys}")
    if set(result.missing_keys) & allowed:
        net.g_s.calibrated.fill_(0.0)
    manifest = release.manifest
    return {"model": release.model_id, "training": manifest.get("training"),
            "export_command": manifest.get("export_command"), "metrics": {
                k: manifest.get("metrics", {}).get(k) for k in ("rd_val", "semantic_preservation")}}


def _calibrate_synthesis(net: CameraCodecNet, backbone, train_set: ImageSet, config: CameraTrainConfig,
                         generator: torch.Generator, importance: Importance, batches: int = 4) -> dict:
    """Fix the synthesis activation grids from a few training batches at every level."""
    inputs = []
    for b in range(batches):
        idx = torch.randint(0, len(train_set), (config.batch_size,), generator=generator)
        images, _ = augment_batch(train_set.images[idx], None, config.crop, config.scale_range, generator)
        images = images.to(config.device)
        with torch.no_grad():
            logits, tap = backbone(images)
        levels = (torch.arange(config.batch_size) + b) % LEVELS
        use_map = torch.rand(config.batch_size, generator=generator) < config.semantic_map_probability
        _, qmap = pixel_weights_and_qmap(logits.argmax(1), use_map.to(config.device), importance)
        inputs.append(net.synthesis_input(images, tap, levels.to(config.device), qmap))
    return net.g_s.calibrate(inputs)


def save_net(net: CameraCodecNet, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def _load_net(net: CameraCodecNet, path: Path) -> None:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"camera checkpoint weights {str(path)!r} do not exist")
    state = {k[len("net."):]: v for k, v in load_file(str(path)).items() if k.startswith("net.")}
    net.load_state_dict(state, strict=True)
