"""Releasing a trained model: hash-named safetensors + ONNX + manifest + model card.

``export_backbone`` loads a checkpoint directory (``best.safetensors`` when
training validated, else ``weights.safetensors``), exports the ONNX graph with
dynamic height/width, checks ONNX Runtime against PyTorch on real frames,
times both at 960x720, and writes the model card.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .backbone import CLASS_NAMES, TAP_CHANNELS, Backbone, BackboneExport, count_parameters
from .backbone_graphs import BACKBONE_INPUTS, BACKBONE_OUTPUTS
from .release import ModelRelease, model_id_for, set_default, tensor_hash
from .train import BEST_FILE, STATE_FILE, WEIGHTS_FILE, evaluate_backbone, load_weights

log = logging.getLogger(__name__)

ONNX_OPSET = 17


def checkpoint_weights(checkpoint: Path) -> Path:
    for name in (BEST_FILE, WEIGHTS_FILE):
        if (checkpoint / name).is_file():
            return checkpoint / name
    if checkpoint.is_file() and checkpoint.suffix == ".safetensors":
        return checkpoint
    raise ConfigError(f"no {BEST_FILE} or {WEIGHTS_FILE} in {str(checkpoint)!r}")


def round_weights_to_half(model: torch.nn.Module) -> None:
    """Round float weights to float16 precision in place.

    Releases store float weights as float16 (half the repository size); the
    ONNX graphs and every metric are computed from these same rounded values,
    so all backends run identical weights.
    """
    with torch.no_grad():
        # Only what the release stores (the state dict): non-persistent
        # constants such as the input normalisation stay exact, as they are
        # when a backend rebuilds the module from the release.
        for tensor in model.state_dict().values():
            if tensor.dtype == torch.float32:
                tensor.copy_(tensor.half().float())


def state_numpy(model: torch.nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    """State dict as numpy, float tensors stored as float16 (see round_weights_to_half)."""
    out = {}
    for k, v in model.state_dict().items():
        array = v.detach().cpu().contiguous().numpy()
        out[prefix + k] = array.astype(np.float16) if array.dtype == np.float32 else array
    return out


def time_call(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples)


def export_onnx(module: torch.nn.Module, inputs: tuple, path: Path, input_names: list[str],
                output_names: list[str], dynamic_axes: dict) -> None:
    import warnings

    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that keeps
        # dynamic H/W through interpolate(size=...) without a shape guard.
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), inputs, str(path), input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes,
                          opset_version=ONNX_OPSET, dynamo=False)


def export_backbone(checkpoint: str | Path, out_dir: str | Path, *, val_data=None,
                    command: str = "", timing_repeats: int = 5, make_default: bool = True,
                    threads: int = 0) -> ModelRelease:
    from safetensors.numpy import save_file

    checkpoint = Path(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = checkpoint_weights(checkpoint)
    model = Backbone()
    load_weights(model, weights_path)
    model.eval()
    round_weights_to_half(model)
    tensors = state_numpy(model)
    model_id = model_id_for("backbone", tensors)
    save_file(tensors, str(out / f"{model_id}.safetensors"), metadata={"model_id": model_id})
    onnx_name = f"{model_id}.onnx"
    graph = BackboneExport(model).eval()
    export_onnx(graph, (torch.rand(1, 3, 360, 480),), out / onnx_name, BACKBONE_INPUTS, BACKBONE_OUTPUTS,
                {"image": {2: "height", 3: "width"}, "semantic": {1: "height", 2: "width"},
                 "tap": {2: "tap_height", 3: "tap_width"}})
    train_state = {}
    if (checkpoint / STATE_FILE).is_file():
        train_state = json.loads((checkpoint / STATE_FILE).read_text())

    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(out / onnx_name), options, providers=["CPUExecutionProvider"])
    metrics: dict = {"params": count_parameters(model)}
    if val_data is not None:
        metrics["val"] = evaluate_backbone(model, val_data)
        agree, total, tap_diff = 0, 0, 0.0
        with torch.inference_mode():
            for i in range(len(val_data)):
                image = val_data.images[i:i + 1].float() / 255.0
                ort_sem, ort_tap = session.run(None, {"image": image.numpy()})
                pt_sem, pt_tap = graph(image)
                agree += int((ort_sem == pt_sem.numpy()).sum())
                total += ort_sem.size
                tap_diff = max(tap_diff, float(np.abs(ort_tap - pt_tap.numpy()).max()))
        metrics["onnx_vs_torch"] = {"argmax_agreement": agree / total, "tap_max_abs_diff": tap_diff,
                                    "frames": len(val_data)}
    frame = torch.rand(1, 3, 720, 960, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch_ms = time_call(lambda: graph(frame), timing_repeats)
    ort_ms = time_call(lambda: session.run(None, {"image": frame.numpy()}), timing_repeats)
    metrics["cpu_ms_960x720"] = {"onnxruntime": ort_ms, "torch": torch_ms,
                                 "torch_threads": torch.get_num_threads(),
                                 "cpu": platform.processor() or platform.machine()}
    manifest = {
        "id": model_id, "kind": "backbone", "sha256": tensor_hash(tensors),
        "graphs": {"backbone": onnx_name}, "inputs": {"backbone": BACKBONE_INPUTS},
        "outputs": {"backbone": BACKBONE_OUTPUTS}, "onnx_opset": ONNX_OPSET,
        "classes": list(CLASS_NAMES), "tap": {"name": "tap", "channels": TAP_CHANNELS, "stride": 8},
        "metrics": metrics, "source_weights": weights_path.name,
        "training": {k: train_state.get(k) for k in ("epoch", "best_epoch", "best_miou", "config", "resumed")},
        "export_command": command,
    }
    (out / f"{model_id}.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / f"{model_id}.md").write_text(backbone_card(manifest, train_state))
    if make_default:
        set_default("backbone", model_id, out)
    log.info("released %s in %s", model_id, out)
    return ModelRelease(model_id=model_id, kind="backbone", folder=out, manifest=manifest)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def backbone_card(manifest: dict, train_state: dict) -> str:
    metrics = manifest["metrics"]
    config = train_state.get("config", {})
    lines = [
        f"# {manifest['id']}: segmentation backbone", "",
        "Fast-SCNN-style two-branch network (`sensor_codec/learned/backbone.py`), trained by this",
        "project from scratch (no pretraining) on CamVid.", "",
        "## Interface",
        "- input `image`: float32 (1, 3, H, W), RGB in [0, 1]; normalisation is inside the graph.",
        "- output `semantic`: uint8 (1, H, W) class ids 0..10 "
        f"({', '.join(manifest['classes'])}).",
        f"- output `tap`: float32 (1, {manifest['tap']['channels']}, ceil(H/8), ceil(W/8)), the fused",
        "  1/8-resolution features the learned camera codec consumes (the classifier's input).",
        f"- ONNX opset {manifest['onnx_opset']}, dynamic height and width; weights sha256 "
        f"`{manifest['sha256']}`.", "",
        "## Data",
        f"- training: `{config.get('data', '?')}` train split"
        + (f" ({train_state['train_frames']} frames)" if train_state.get("train_frames") else "")
        + ", void (11) ignored;",
        f"  crops {config.get('crop')}, random scale {config.get('scale_range')}, flip, brightness/contrast",
        f"  jitter; AdamW lr {config.get('lr')}, poly schedule, batch {config.get('batch_size')}, "
        f"seed {config.get('seed')}, ENet class weights.",
        f"- epochs trained: {train_state.get('epoch')}; released weights: `{manifest['source_weights']}`"
        + (f" (best validation epoch {train_state.get('best_epoch')})" if train_state.get("best_epoch") else ""),
        "- CamVid is for research use; cite Brostow et al. 2008 in published figures.", "",
        "## Commands", "```",
        config.get("command", "(training command not recorded)"),
        *[f"{r['command']}   # resumed after epoch {r['at_epoch']}, schedule set to {r['epochs']} epochs"
          for r in train_state.get("resumed", [])],
        manifest.get("export_command") or "(export command not recorded)", "```", "",
        "## Metrics (CamVid val, 101 frames, 480x360, void ignored)",
    ]
    val = metrics.get("val")
    if val:
        lines += [f"- mIoU: **{_pct(val['miou'])} %** (issue 3 target: 55 %), pixel accuracy "
                  f"{_pct(val['pixel_accuracy'])} %", "",
                  "| class | IoU % |", "|---|---|"]
        lines += [f"| {name} | {_pct(v)} |" for name, v in val["per_class_iou"].items()]
    else:
        lines.append("- not evaluated (export ran without --val)")
    agreement = metrics.get("onnx_vs_torch")
    if agreement:
        lines += ["", f"- ONNX Runtime vs PyTorch on {agreement['frames']} val frames: argmax "
                  f"agreement {100 * agreement['argmax_agreement']:.4f} %, tap max |diff| "
                  f"{agreement['tap_max_abs_diff']:.2e}"]
    timing = metrics["cpu_ms_960x720"]
    lines += ["", "## Speed (one 960x720 frame, CPU, median)",
              f"- ONNX Runtime: {timing['onnxruntime']:.1f} ms; PyTorch eager: {timing['torch']:.1f} ms "
              f"({timing['torch_threads']} threads, {timing['cpu']}; machine shared with other jobs, "
              "so treat as an upper bound)",
              f"- parameters: {metrics['params']:,}", ""]
    return "\n".join(lines)
