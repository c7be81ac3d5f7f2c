"""The backbone and the camera encoder as ONE graph with two outputs.

The released camera encoder graph takes the backbone's ``tap`` as an input,
and the gain map it needs depends on the semantic map (through the block
quality map). Run separately, a frame costs two graph launches plus a round
trip to the host between them. The fused graph does the whole encoder pass
on the device::

    inputs : image (1,3,H,W) RGB in [0,1]; gain (1,M,1,1) = the level's gain vector;
             class_weights (11,), thresholds (3,), fraction_weight (1,)  (the importance table)
    outputs: semantic (1,H,W) uint8   -- the semantic map (published anyway)
             qmap (1,Hp/32,Wp/32) uint8 -- block quality levels (sent in the bitstream)
             y (1,M,Hp/16,Wp/16), z (1,CZ,Hp/64,Wp/64) -- the latents

It is exactly ``LearnedCameraRuntime.compress``'s float part: edge padding to
a multiple of 64, tap padding, ``Importance.quality_levels`` (gather, block
mean / max, threshold count) and the gain map, all in the graph. The
importance table is an input, so editing ``config/semantic_importance.yaml``
needs no new graph or engine, and "no semantic allocation" is a table
(all ones, thresholds around the neutral level).

``FusedEncoder`` produces payload sections in the camera codec's format from
the fused graph on any backend, so whatever ran the fused graph, every
decoder decodes the result (the entropy model's inputs are integers).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InvalidFrameError
from ..learned.release import ModelRelease, find_release, resolve_release
from ..learned.runtime import image_to_input, register_torch_graphs

log = logging.getLogger(__name__)

FUSED_KIND = "camera_fused"
FUSED_GRAPH = "fused_encoder"
FUSED_GRAPH_VERSION = 1  # bump when the fused graph's computation changes
FUSED_INPUTS = ["image", "gain", "class_weights", "thresholds", "fraction_weight"]
FUSED_OUTPUTS = ["semantic", "qmap", "y", "z"]
NEUTRAL_QMAP_LEVEL = 2
QMAP_LEVELS = 4


@dataclass(frozen=True)
class FusedRelease(ModelRelease):
    """A fused graph plus the two releases whose weights it holds (no weight copy on disk)."""

    camera: ModelRelease | None = None
    backbone: ModelRelease | None = None

    def load_tensors(self, verify: bool = True) -> dict[str, np.ndarray]:
        if self.camera is None or self.backbone is None:
            raise ConfigError(f"fused model {self.model_id} lost its source releases")
        tensors = {f"camera.{k}": v for k, v in self.camera.load_tensors(verify).items()}
        tensors.update({f"backbone.{k}": v for k, v in self.backbone.load_tensors(verify).items()})
        return tensors


def fused_sha256(camera: ModelRelease, backbone: ModelRelease) -> str:
    """Identity of the fused weights: both releases' hashes and the graph version."""
    digest = hashlib.sha256()
    for part in (camera.manifest["sha256"], backbone.manifest["sha256"], str(FUSED_GRAPH_VERSION)):
        digest.update(part.encode() + b"\n")
    return digest.hexdigest()


def fused_manifest(camera: ModelRelease, backbone: ModelRelease) -> dict:
    sha = fused_sha256(camera, backbone)
    model_id = f"fused-{sha[:12]}"
    return {"id": model_id, "kind": FUSED_KIND, "sha256": sha, "camera": camera.model_id,
            "backbone": backbone.model_id, "graph_version": FUSED_GRAPH_VERSION,
            "graphs": {FUSED_GRAPH: f"{model_id}.onnx"}, "inputs": {FUSED_GRAPH: FUSED_INPUTS},
            "outputs": {FUSED_GRAPH: FUSED_OUTPUTS},
            "latent_channels": int(camera.manifest["latent_channels"]),
            "num_classes": len(backbone.manifest.get("classes", [])) or 11}


def source_releases(camera_model: str | None = None, models: str | None = None
                    ) -> tuple[ModelRelease, ModelRelease]:
    camera = resolve_release("camera", camera_model, models)
    backbone = find_release(camera.manifest["backbone"], camera.folder)
    return camera, backbone


def load_fused(folder: str | Path, camera_model: str | None = None, models: str | None = None
               ) -> FusedRelease:
    """The fused release for the camera model, from ``folder``; ConfigError if not exported."""
    camera, backbone = source_releases(camera_model, models)
    manifest = fused_manifest(camera, backbone)
    path = Path(folder) / manifest["graphs"][FUSED_GRAPH]
    if not path.is_file():
        raise ConfigError(f"no fused graph {path.name} in {folder} for {camera.model_id}; "
                          "run 'sensor-codec engines fuse'")
    return FusedRelease(model_id=manifest["id"], kind=FUSED_KIND, folder=Path(folder), manifest=manifest,
                        camera=camera, backbone=backbone)


# ---------------------------------------------------------------- the graph (torch)

def _fused_module(backbone_module, camera_net, qmap_gains):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class FusedEncoderGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone_module
            self.net = camera_net
            self.register_buffer("qmap_gains", torch.tensor(qmap_gains, dtype=torch.float32),
                                 persistent=False)

        def forward(self, image, gain, class_weights, thresholds, fraction_weight):
            height, width = image.shape[2], image.shape[3]
            logits, tap = self.backbone(image)
            semantic = logits.argmax(dim=1)
            # Padding amounts as camera_runtime computes them (multiple of 64).
            pad_h = (64 - height % 64) % 64
            pad_w = (64 - width % 64) % 64
            padded = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
            tap_pad_h = (height + pad_h) // 8 - tap.shape[2]
            tap_pad_w = (width + pad_w) // 8 - tap.shape[3]
            tap = F.pad(tap, (0, tap_pad_w, 0, tap_pad_h), mode="replicate")
            # Importance.quality_levels: per-pixel weight, edge pad to 32, block mean / max.
            weights = class_weights[semantic].unsqueeze(1)
            block_pad_h = (32 - height % 32) % 32
            block_pad_w = (32 - width % 32) % 32
            weights = F.pad(weights, (0, block_pad_w, 0, block_pad_h), mode="replicate")
            score = torch.maximum(F.avg_pool2d(weights, 32), fraction_weight * F.max_pool2d(weights, 32))
            levels = (score.unsqueeze(-1) >= thresholds).sum(dim=-1)
            qmap = F.pad(levels.float(), (0, (pad_w - block_pad_w) // 32, 0, (pad_h - block_pad_h) // 32),
                         mode="replicate").long()
            spatial = self.qmap_gains[qmap]
            spatial = F.interpolate(spatial, scale_factor=2.0, mode="nearest")
            y = self.net.analysis(padded, tap) * (gain * spatial)
            z = self.net.h_a(y)
            return semantic.to(torch.uint8), qmap[:, 0].to(torch.uint8), y, z

    return FusedEncoderGraph().eval()


@register_torch_graphs(FUSED_KIND)
def fused_graphs(tensors: dict[str, np.ndarray]) -> dict:
    """PyTorch twin of the fused ONNX graph, from ``FusedRelease.load_tensors``."""
    from ..learned.backbone_graphs import backbone_from_tensors
    from ..learned.camera_codec import QMAP_GAINS, net_from_tensors

    backbone = backbone_from_tensors({k[len("backbone."):]: v for k, v in tensors.items()
                                      if k.startswith("backbone.")})
    net = net_from_tensors({k[len("camera."):]: v for k, v in tensors.items() if k.startswith("camera.")})
    return {FUSED_GRAPH: _fused_module(backbone, net, QMAP_GAINS)}


def export_fused(out_dir: str | Path, camera_model: str | None = None, models: str | None = None,
                 *, opset: int = 17) -> FusedRelease:
    """Write ``fused-<hash>.onnx`` and its manifest to ``out_dir``."""
    import warnings

    import torch

    camera, backbone = source_releases(camera_model, models)
    manifest = fused_manifest(camera, backbone)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    release = FusedRelease(model_id=manifest["id"], kind=FUSED_KIND, folder=out, manifest=manifest,
                           camera=camera, backbone=backbone)
    module = fused_graphs(release.load_tensors())[FUSED_GRAPH]
    latent = manifest["latent_channels"]
    example = (torch.rand(1, 3, 360, 480), torch.ones(1, latent, 1, 1), torch.ones(manifest["num_classes"]),
               torch.tensor([0.45, 0.9, 1.4]), torch.tensor([0.6]))
    dynamic = {"image": {2: "height", 3: "width"}, "semantic": {1: "height", 2: "width"},
               "qmap": {1: "h32", 2: "w32"}, "y": {2: "h16", 3: "w16"}, "z": {2: "h64", 3: "w64"}}
    path = out / manifest["graphs"][FUSED_GRAPH]
    with warnings.catch_warnings():
        # The TorchScript exporter keeps the shape arithmetic dynamic (see learned/export.py).
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), input_names=FUSED_INPUTS, output_names=FUSED_OUTPUTS,
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    (out / f"{manifest['id']}.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log.info("fused %s + %s into %s", backbone.model_id, camera.model_id, path)
    return release


# ---------------------------------------------------------------- feeds and encoding

def _float32_at_least(value: float) -> np.float32:
    """Smallest float32 >= value, so ``score32 >= t32`` equals ``score32 >= value`` (float64)."""
    candidate = np.float32(value)
    if float(candidate) < value:
        candidate = np.nextafter(candidate, np.float32(np.inf))
    return candidate


def importance_inputs(importance, semantic_allocation: bool = True) -> dict[str, np.ndarray]:
    if semantic_allocation:
        weights = np.asarray(importance.weights, dtype=np.float32)
        thresholds = np.array([_float32_at_least(t) for t in importance.thresholds], dtype=np.float32)
        fraction = np.array([importance.fraction_weight], dtype=np.float32)
    else:  # every block lands on the neutral level, as camera_runtime sends it
        weights = np.ones(len(importance.weights), dtype=np.float32)
        thresholds = np.array([-np.inf] * NEUTRAL_QMAP_LEVEL + [np.inf] * (QMAP_LEVELS - 1 - NEUTRAL_QMAP_LEVEL),
                              dtype=np.float32)
        fraction = np.array([1.0], dtype=np.float32)
    return {"class_weights": weights, "thresholds": thresholds, "fraction_weight": fraction}


def fused_feeds(runtime, rgb: np.ndarray, level: int, semantic_allocation: bool = True) -> dict[str, np.ndarray]:
    """Inputs of the fused graph for one frame, from a LearnedCameraRuntime's tables."""
    if not 0 <= level < runtime.levels:
        raise InvalidFrameError(f"quality level {level} outside 0..{runtime.levels - 1}")
    feeds = {"image": image_to_input(rgb),
             "gain": np.ascontiguousarray(runtime.gain[level][None, :, None, None], dtype=np.float32)}
    feeds.update(importance_inputs(runtime.importance, semantic_allocation))
    return feeds


def separate_runtime(release: ModelRelease):
    """The CPU reference runtime of the camera model behind ``release`` (fused or camera)."""
    from ..learned.camera_runtime import LearnedCameraRuntime

    camera = release.camera if isinstance(release, FusedRelease) else release
    return LearnedCameraRuntime(release=camera, backend="onnxruntime")


class FusedEncoder:
    """Camera-codec compression with one pass of the fused graph on any backend.

    ``runtime`` (a LearnedCameraRuntime of the same camera model) supplies the
    entropy tables and the quality-map coder; ``backend`` runs the fused graph.
    The result has the same sections and metadata as ``runtime.compress``.
    """

    def __init__(self, runtime, release: FusedRelease, backend: str = "auto", threads: int = 0) -> None:
        from ..learned.runtime import make_backend

        if release.manifest.get("camera") != runtime.model_id:
            raise ConfigError(f"fused model {release.model_id} holds camera model "
                              f"{release.manifest.get('camera')}, the runtime has {runtime.model_id}")
        self.runtime = runtime
        self.release = release
        self.backend = make_backend(release, backend, threads)

    @classmethod
    def for_runtime(cls, runtime, backend: str = "auto", threads: int = 0,
                    folder: str | Path | None = None) -> FusedEncoder:
        """The fused encoder of ``runtime``'s camera model: its fused graph loaded from
        ``folder`` (default: the engines folder, see engines/README.md), exported
        there first if missing. What an encoder on a GPU backend uses so that the
        backbone and the camera branch run as one engine."""
        from .artefacts import default_engines_dir

        out = default_engines_dir(folder)
        camera = runtime.release
        try:
            release = load_fused(out, camera.model_id, str(camera.folder))
        except ConfigError:
            log.info("no fused graph for %s in %s yet: exporting it", camera.model_id, out)
            release = export_fused(out, camera.model_id, str(camera.folder))
        return cls(runtime, release, backend, threads)

    def compress(self, rgb: np.ndarray, level: int, *, semantic_allocation: bool = True):
        runtime = self.runtime
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InvalidFrameError(f"learned camera codec takes HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        if height < 16 or width < 16:
            raise InvalidFrameError(f"image {width}x{height} is too small; the learned codec needs >= 16x16")
        semantic, qmap, y, z = self.backend.run(FUSED_GRAPH, fused_feeds(runtime, rgb, level, semantic_allocation))
        return runtime.entropy_code(y[0], z[0], qmap[0], semantic[0], height, width, level,
                                    semantic_allocation)


def compare_with_separate(release: FusedRelease, frames, *, level: int = 4, backend: str = "onnxruntime",
                          threads: int = 0) -> dict:
    """Run the fused graph and the separate backbone + encoder graphs on ``frames``
    (HxWx3 uint8) with ``backend``; the largest differences of every output."""
    from ..learned.camera_runtime import LearnedCameraRuntime, _pad_to
    from ..learned.runtime import make_backend

    runtime = LearnedCameraRuntime(release=release.camera, backend=backend, threads=threads)
    fused_backend = make_backend(release, backend, threads)
    report = {"frames": 0, "semantic_mismatch_fraction": 0.0, "qmap_mismatch_fraction": 0.0,
              "y_max_abs_diff": 0.0, "z_max_abs_diff": 0.0, "y_max_abs": 0.0}
    semantic_bad = semantic_total = qmap_bad = qmap_total = 0
    for rgb in frames:
        semantic, qmap, y, z = fused_backend.run(FUSED_GRAPH, fused_feeds(runtime, rgb, level))
        seg = runtime.backbone.segment(rgb)
        hp, wp = runtime.padded_shape(*rgb.shape[:2])
        ref_qmap = _pad_to(runtime.importance.quality_levels(seg.semantic), hp // 32, wp // 32)
        image = _pad_to(rgb.transpose(2, 0, 1), hp, wp)[None].astype(np.float32) / np.float32(255.0)
        tap = _pad_to(seg.tap, hp // 8, wp // 8)[None].astype(np.float32)
        ref_y, ref_z = runtime.backend.run("encoder", {"image": image, "tap": tap,
                                                       "gain": runtime._gain_maps(level, ref_qmap, inverse=False)})
        semantic_bad += int((semantic[0] != seg.semantic).sum())
        semantic_total += seg.semantic.size
        if qmap[0].shape != ref_qmap.shape:
            raise ConfigError(f"fused qmap {qmap[0].shape} != separate {ref_qmap.shape}")
        qmap_bad += int((qmap[0] != ref_qmap).sum())
        qmap_total += ref_qmap.size
        report["y_max_abs_diff"] = max(report["y_max_abs_diff"], float(np.abs(y - ref_y).max()))
        report["z_max_abs_diff"] = max(report["z_max_abs_diff"], float(np.abs(z - ref_z).max()))
        report["y_max_abs"] = max(report["y_max_abs"], float(np.abs(ref_y).max()))
        report["frames"] += 1
    report["semantic_mismatch_fraction"] = semantic_bad / max(semantic_total, 1)
    report["qmap_mismatch_fraction"] = qmap_bad / max(qmap_total, 1)
    return report
