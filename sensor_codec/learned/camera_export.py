"""Releasing the learned camera codec: freeze entropy tables, export ONNX, measure, card."""

from __future__ import annotations

import json
import logging
import platform
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, SensorCodecError, UnknownModelError
from .camera_codec import (DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS, HIDDEN,
                           HYPER, LAMBDAS, LATENT, LEVELS, QMAP_GAINS, CameraCodecNet, decoder_graph,
                           EncoderGraph, frozen_tensors)
from .camera_train import _load_net
from .export import export_onnx, round_weights_to_half, state_numpy, time_call
from .release import (DEFAULTS_FILE, ModelRelease, find_release, model_id_for, resolve_release,
                      set_default, tensor_hash)
from .train import STATE_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def measure_rd(runtime, images: np.ndarray, *, semantic_allocation: bool = True) -> list[dict]:
    """Mean bpp (whole container payload) and PSNR per level over ``images`` (N,H,W,3)."""
    from ..codecs.base import Container
    from ..frames import Modality

    rows = []
    for level in range(runtime.levels):
        bpps, psnrs = [], []
        for rgb in images:
            packed = runtime.compress(rgb, level, semantic_allocation=semantic_allocation)
            payload = Container(modality=Modality.CAMERA, codec="camera_learned", model_id=runtime.model_id,
                                metadata=packed.metadata, sections=packed.sections).pack()
            decoded, _ = runtime.decompress(packed.sections, packed.metadata, with_semantic=False)
            bpps.append(8 * len(payload) / (rgb.shape[0] * rgb.shape[1]))
            psnrs.append(psnr(rgb, decoded))
        rows.append({"level": level, "bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)),
                     "frames": len(images)})
    return rows


def semantic_preservation(runtime, val_data, level: int = 0, frames: int | None = None) -> dict:
    """Backbone mIoU on original vs decoded frames at ``level`` (the decoder's regenerated map)."""
    from .backbone_meta import NUM_CLASSES
    from .train import confusion_matrix, iou_from_confusion

    count = len(val_data) if frames is None else min(frames, len(val_data))
    conf_original = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    conf_decoded = np.zeros_like(conf_original)
    bits = 0
    for i in range(count):
        rgb = np.ascontiguousarray(val_data.images[i].permute(1, 2, 0).numpy())
        truth = val_data.labels[i]
        packed = runtime.compress(rgb, level)
        bits += 8 * sum(len(s) for s in packed.sections)
        _, decoded_semantic = runtime.decompress(packed.sections, packed.metadata)
        conf_original += confusion_matrix(torch.from_numpy(packed.semantic), truth).numpy()
        conf_decoded += confusion_matrix(torch.from_numpy(decoded_semantic), truth).numpy()
    miou_original = iou_from_confusion(conf_original)[0]
    miou_decoded = iou_from_confusion(conf_decoded)[0]
    pixels = count * val_data.images.shape[2] * val_data.images.shape[3]
    return {"level": level, "frames": count, "bpp_sections": bits / pixels,
            "miou_original": miou_original, "miou_decoded": miou_decoded,
            "ratio": miou_decoded / miou_original if miou_original else float("nan")}


def _backbone_in(out: Path, backbone_id: str | None) -> ModelRelease:
    """The backbone release in ``out``, copied there from the models folder
    (``SENSOR_CODEC_MODELS`` or the shipped one) when ``out`` lacks it, and made
    ``out``'s default backbone if it has none: a camera model regenerates
    semantic maps with its backbone, so the folder the nodes load must hold both."""
    try:
        return resolve_release("backbone", backbone_id, out)
    except UnknownModelError:
        source = resolve_release("backbone", backbone_id)  # its error names what is held
    copied = sorted(p.name for p in source.folder.glob(f"{source.model_id}*") if p.is_file())
    for name in copied:
        shutil.copy2(source.folder / name, out / name)
    log.info("copied backbone %s into %s (%s)", source.model_id, out, ", ".join(copied))
    defaults = out / DEFAULTS_FILE
    if "backbone" not in (json.loads(defaults.read_text()) if defaults.is_file() else {}):
        set_default("backbone", source.model_id, out)
    return find_release(source.model_id, out)


def export_camera(checkpoint: str | Path, out_dir: str | Path, *, backbone: str | None = None,
                  val_data=None, command: str = "", make_default: bool = True, threads: int = 0,
                  rd_frames: int = 10, timing_repeats: int = 3, semantic_frames: int = 0) -> ModelRelease:
    from safetensors.numpy import save_file

    from .camera_runtime import LearnedCameraRuntime

    checkpoint = Path(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_state = json.loads((checkpoint / STATE_FILE).read_text()) if (checkpoint / STATE_FILE).is_file() else {}
    backbone_id = backbone or train_state.get("backbone")
    backbone_release = _backbone_in(out, backbone_id)
    if train_state.get("backbone") and train_state["backbone"] != backbone_release.model_id:
        raise ConfigError(f"checkpoint was trained on {train_state['backbone']}, export asked for "
                          f"{backbone_release.model_id}")
    net = CameraCodecNet()
    _load_net(net, checkpoint / WEIGHTS_FILE)
    net.eval()
    if not bool(net.g_s.calibrated):
        raise ConfigError(f"checkpoint {checkpoint} has a float synthesis; fine-tune it on the integer "
                          "grids first: sensor-codec train camera --resume CHECKPOINT --out CHECKPOINT "
                          "--steps N --integer-from-step S (S below N) with the run's other options")
    round_weights_to_half(net)
    tensors = state_numpy(net, prefix="net.")
    tensors.update(frozen_tensors(net))
    model_id = model_id_for("camera", tensors)
    save_file(tensors, str(out / f"{model_id}.safetensors"), metadata={"model_id": model_id})
    hp, wp = 384, 512
    export_onnx(EncoderGraph(net), (torch.rand(1, 3, hp, wp), torch.rand(1, 128, hp // 8, wp // 8),
                                    torch.ones(1, LATENT, hp // 16, wp // 16)),
                out / f"{model_id}-encoder.onnx", ENCODER_INPUTS, ENCODER_OUTPUTS,
                {"image": {2: "height", 3: "width"}, "tap": {2: "h8", 3: "w8"}, "gain": {2: "h16", 3: "w16"},
                 "y": {2: "h16", 3: "w16"}, "z": {2: "h64", 3: "w64"}})
    export_onnx(decoder_graph(tensors), (torch.zeros(1, LATENT, hp // 16, wp // 16),),
                out / f"{model_id}-decoder.onnx", DECODER_INPUTS, DECODER_OUTPUTS,
                {"grid": {2: "h16", 3: "w16"}, "pixels": {2: "height", 3: "width"}})
    from importlib.metadata import version

    manifest = {
        "id": model_id, "kind": "camera", "sha256": tensor_hash(tensors), "backbone": backbone_release.model_id,
        "graphs": {"encoder": f"{model_id}-encoder.onnx", "decoder": f"{model_id}-decoder.onnx"},
        "inputs": {"encoder": ENCODER_INPUTS, "decoder": DECODER_INPUTS},
        "outputs": {"encoder": ENCODER_OUTPUTS, "decoder": DECODER_OUTPUTS},
        "latent_channels": LATENT, "hidden_channels": HIDDEN, "hyper_channels": HYPER,
        "levels": LEVELS, "lambdas": list(LAMBDAS), "qmap_gains": list(QMAP_GAINS),
        "constriction_version": version("constriction"),
        "training": {k: train_state.get(k) for k in ("epoch", "step", "config", "resumed", "parent",
                                                      "integer_from_step", "synthesis_calibration")},
        "export_command": command, "metrics": {},
    }
    manifest_path = out / f"{model_id}.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    release = ModelRelease(model_id=model_id, kind="camera", folder=out, manifest=manifest)
    metrics: dict = {"params": int(sum(p.numel() for p in net.parameters()))}
    runtimes = {name: LearnedCameraRuntime(release=release, backend=name, threads=threads)
                for name in ("onnxruntime", "torch")}
    if val_data is not None:
        images = val_data.images[:rd_frames].permute(0, 2, 3, 1).numpy()
        metrics["rd_val"] = measure_rd(runtimes["onnxruntime"], images)
        metrics["rd_val_frames"] = int(len(images))
        if semantic_frames and val_data.labels is not None:
            metrics["semantic_preservation"] = semantic_preservation(
                runtimes["onnxruntime"], val_data, level=0, frames=semantic_frames)
    rng = np.random.default_rng(0)
    frame = (val_data.images[0].permute(1, 2, 0).numpy() if val_data is not None
             else rng.integers(0, 256, (360, 480, 3), dtype=np.uint8))
    big = np.ascontiguousarray(np.kron(frame, np.ones((2, 2, 1), dtype=np.uint8))[:720, :960])
    timing = {}
    for name, rt in runtimes.items():
        packed = rt.compress(big, LEVELS // 2)
        timing[name] = {
            "encode_ms": time_call(lambda rt=rt: rt.compress(big, LEVELS // 2), timing_repeats),
            "decode_ms": time_call(lambda rt=rt, p=packed: rt.decompress(p.sections, p.metadata), timing_repeats),
        }
    timing["torch_threads"] = torch.get_num_threads()
    timing["cpu"] = platform.processor() or platform.machine()
    metrics["cpu_ms_960x720"] = timing
    manifest["metrics"] = metrics
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / f"{model_id}.md").write_text(camera_card(manifest, train_state))
    if make_default:
        set_default("camera", model_id, out)
    return ModelRelease(model_id=model_id, kind="camera", folder=out, manifest=manifest)


def _parent_lines(train_state: dict) -> list[str]:
    parent, config = train_state.get("parent"), train_state.get("config", {})
    if not parent:
        return []
    before = parent.get("training") or {}
    before_config = before.get("config") or {}
    lines = [f"- started from `{parent['model']}` ({before.get('step')} steps: "
             f"{before_config.get('batch_size')} x {before_config.get('crop')} crops, "
             f"lr {before_config.get('lr')}); its commands are listed first below"]
    if config.get("decoder_only"):
        lines.append("- this run trained only the synthesis and inverse gains (encoder, hyperprior and "
                     "entropy tables of the parent unchanged)")
    if config.get("low_level_factors"):
        lines.append(f"- added low levels: the parent's lowest gain x {config['low_level_factors']}")
    if config.get("semantic_loss_weight"):
        lines.append(f"- loss adds {config['semantic_loss_weight']} x the backbone's cross-entropy on the "
                     "reconstruction against its map of the original")
    return lines


def _parent_commands(train_state: dict) -> list[str]:
    parent = train_state.get("parent")
    if not parent:
        return []
    before = parent.get("training") or {}
    return [f"# parent {parent['model']}:", (before.get("config") or {}).get("command") or "(not recorded)",
            *[f"{r['command']}   # resumed at step {r['at_step']}" for r in before.get("resumed") or []],
            parent.get("export_command") or "", "# this model:"]


def _frames_note(train_state: dict) -> str:
    """' (N frames)' when the checkpoint recorded its training set size."""
    frames = train_state.get("train_frames")
    return f" ({frames} frames)" if frames else ""


def camera_card(manifest: dict, train_state: dict) -> str:
    config = train_state.get("config", {})
    metrics = manifest["metrics"]
    history = train_state.get("history") or [{}]
    lines = [
        f"# {manifest['id']}: learned camera codec", "",
        "Analysis transform on the image plus the backbone's 1/8 tap features, mean-scale hyperprior",
        "with a fixed-point hyper-synthesis (bit-exact on every backend), gained variable rate",
        f"({manifest['levels']} levels), semantic quality map; see `sensor_codec/learned/camera_codec.py`.",
        f"Backbone: `{manifest['backbone']}`. constriction {manifest['constriction_version']}.", "",
        "## Training",
        f"- data: `{config.get('data', '?')}`{_frames_note(train_state)}, crops {config.get('crop')},"
        f" scale {config.get('scale_range')}, batch {config.get('batch_size')}, Adam lr {config.get('lr')}"
        f" cosine, seed {config.get('seed')}",
        f"- steps: {train_state.get('step')} ({train_state.get('epoch')} epochs); last epoch: "
        f"loss {history[-1].get('loss', float('nan')):.3f}, bpp {history[-1].get('bpp', float('nan')):.3f}, "
        f"PSNR {history[-1].get('psnr', float('nan')):.2f} dB (training crops, random levels)",
        *_parent_lines(train_state),
        "- **short CPU training**: this release is an architecture/format check and does NOT meet",
        "  issue 3's rate-distortion bars.", "",
        "## Commands", "```", *_parent_commands(train_state), config.get("command", "(not recorded)"),
        *[f"{r['command']}   # resumed at step {r['at_step']}, schedule set to {r['max_steps']} steps"
          for r in train_state.get("resumed", [])],
        manifest.get("export_command") or "(not recorded)", "```", "",
    ]
    if "rd_val" in metrics:
        lines += [f"## Rate-distortion (CamVid val, first {metrics['rd_val_frames']} frames, 480x360, "
                  "ONNX Runtime, whole container bytes)", "",
                  "| level | bpp | PSNR dB |", "|---|---|---|"]
        lines += [f"| {r['level']} | {r['bpp']:.3f} | {r['psnr']:.2f} |" for r in metrics["rd_val"]]
        lines.append("")
    sp = metrics.get("semantic_preservation")
    if sp:
        lines += [f"## Semantic preservation (level {sp['level']}, {sp['frames']} CamVid val frames, "
                  f"{sp['bpp_sections']:.3f} bpp in the coded sections)", "",
                  f"- backbone mIoU on originals {100 * sp['miou_original']:.1f} %, on decoded frames "
                  f"{100 * sp['miou_decoded']:.1f} % (ratio {100 * sp['ratio']:.1f} %; issue 3 bar: >= 90 %)", ""]
    timing = metrics["cpu_ms_960x720"]
    lines += ["## Speed (960x720, CPU, median, level 4; encode includes the backbone, decode includes",
              "regenerating the semantic map)", ""]
    for name in ("onnxruntime", "torch"):
        lines.append(f"- {name}: encode {timing[name]['encode_ms']:.0f} ms, decode {timing[name]['decode_ms']:.0f} ms")
    lines += [f"- {timing['torch_threads']} threads, {timing['cpu']}, machine shared with other jobs", "",
              f"Parameters: {metrics['params']:,}", ""]
    return "\n".join(lines)


def cross_backend_check(frames, *, model: str | None = None, models: str | None = None,
                        levels: list[int] | None = None, threads: int = 0, progress: bool = True) -> dict:
    """Encode every frame with each backend and decode with every backend.

    Counts failures per encoder->decoder pair (an exception, or latents /
    quality map differing from the encoder's own decode) and, per encoder,
    how the reconstructions of the same payload by the two backends compare. ``frames`` yields HxWx3
    uint8 RGB arrays.
    """
    from tqdm import tqdm

    from .camera_runtime import LearnedCameraRuntime

    names = ("onnxruntime", "torch")
    runtimes = {n: LearnedCameraRuntime(model, n, threads=threads, models=models) for n in names}
    any_rt = runtimes[names[0]]
    levels = levels or list(range(any_rt.levels))
    report = {"model": any_rt.model_id, "frames": 0, "pairs": {}, "reconstructions": {}}
    for i, rgb in enumerate(tqdm(frames, desc="cross-backend", disable=not progress)):
        level = levels[i % len(levels)]
        report["frames"] += 1
        decoded = {}
        for enc_name in names:
            packed = runtimes[enc_name].compress(rgb, level)
            reference = runtimes[enc_name].decode_latents(packed.sections, packed.metadata)
            for dec_name in names:
                pair = report["pairs"].setdefault(f"{enc_name}->{dec_name}", {"failures": 0, "checked": 0})
                pair["checked"] += 1
                try:
                    latents = runtimes[dec_name].decode_latents(packed.sections, packed.metadata)
                    image, _ = runtimes[dec_name].decompress(packed.sections, packed.metadata,
                                                             with_semantic=False)
                except SensorCodecError:
                    pair["failures"] += 1
                    continue
                if not (np.array_equal(latents[0], reference[0]) and np.array_equal(latents[1], reference[1])):
                    pair["failures"] += 1
                    continue
                decoded[(enc_name, dec_name)] = image
            # Same payload, decoded by each backend: compare the pictures.
            a, b = decoded.get((enc_name, names[0])), decoded.get((enc_name, names[1]))
            if a is None or b is None:
                continue
            agreement = report["reconstructions"].setdefault(f"encoded by {enc_name}", {
                "payloads": 0, "identical": 0, "max_abs_diff": 0, "differing_pixels": 0, "pixels": 0})
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
            agreement["payloads"] += 1
            agreement["identical"] += int(diff.max() == 0)
            agreement["max_abs_diff"] = max(agreement["max_abs_diff"], int(diff.max()))
            agreement["differing_pixels"] += int(np.count_nonzero(diff.max(axis=2)))
            agreement["pixels"] += int(diff.shape[0] * diff.shape[1])
    return report
