"""Integer-exact synthesis transform: every backend reconstructs the same picture.

Float convolutions give answers that depend on summation order, so ONNX
Runtime, PyTorch and CUDA round a few pixels differently. This synthesis
computes only with integers that float32 represents exactly:

* activations are integers with ``|a| <= ACT_LIMIT``, the real value being
  ``a * 2**-f`` with one exponent ``f`` per tensor (calibrated, then fixed);
* weights are integers on a per-output-channel power-of-two grid chosen so
  that, for every output channel and every transposed-convolution phase,
  ``sum |w| * ACT_LIMIT + |bias| < 2**24``. Every partial sum is then an
  integer below 2**24, exact in float32 whatever the summation order, with or
  without fused multiply-add;
* rescaling is a multiplication by a power of two (exact), then
  ``floor(x + 0.5)`` and a clip: exact;
* the inverse GDN ``x * (beta + gamma |x|)`` quantises the norm to
  ``NORM_LIMIT`` so that ``|x| * norm < 2**24``.

The last layer's weights carry the factor 255, so its output is the 8-bit
pixel itself. The first input, ``y_hat * inverse gain``, is put on its
integer grid by the runtime in float64 numpy (``input_integers``), the same
on every machine.

Training uses the same arithmetic with straight-through gradients
(``IntSynthesis`` in float mode); ``freeze`` turns it into integer tensors
and ``FrozenSynthesis`` is the graph exported to ONNX and run by PyTorch.
Convolution algorithms that are not sums of products (Winograd, FFT) or
reduced precision (TF32, fp16) break exactness; the CUDA backends turn them off.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError

ACT_LIMIT = 2047          # |activation| as an integer (12-bit signed)
NORM_LIMIT = 8191         # inverse-GDN norm as an integer: ACT_LIMIT * NORM_LIMIT < 2**24
EXACT_LIMIT = 2 ** 24     # float32 holds every integer below this exactly
WEIGHT_INT_LIMIT = 2 ** 15
PIXEL_MAX = 255.0
STAGES = 4                # transposed convolutions; an inverse GDN follows all but the last


def _ste(x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    return x + (rounded - x).detach()


def _requantise(acc: torch.Tensor, shift: torch.Tensor, low: float, high: float, exact: bool) -> torch.Tensor:
    """clip(floor(acc * 2**shift + 0.5), low, high); shift is (C,) per channel or a scalar."""
    scaled = acc * torch.pow(2.0, shift).view(1, -1, 1, 1) if shift.ndim else acc * torch.pow(2.0, shift)
    rounded = torch.floor(scaled + 0.5)
    out = rounded if exact else _ste(scaled, rounded)
    return torch.clamp(out, low, high)


def deconv_phase_sums(weight: np.ndarray, stride: int = 2) -> np.ndarray:
    """(Cout,) worst sum of |w| that reaches one output pixel of a transposed conv.

    ``weight`` is (Cin, Cout, k, k). An output pixel receives the kernel taps of
    one parity class per axis (stride 2: even or odd kernel indices)."""
    magnitude = np.abs(weight.astype(np.float64))
    sums = [magnitude[:, :, py::stride, px::stride].sum(axis=(0, 2, 3))
            for py in range(stride) for px in range(stride)]
    return np.max(sums, axis=0)


def weight_exponents(phase_sums: np.ndarray, max_abs: np.ndarray, bias_abs: np.ndarray,
                     input_exp: float) -> np.ndarray:
    """Per output channel: the finest power-of-two weight grid that keeps sums exact.

    With weights on 2**e and inputs on 2**input_exp, the worst sum is
    2**e * (phase_sum * ACT_LIMIT + |bias| * 2**input_exp); half of 2**24 leaves
    room for the rounding of each weight."""
    worst = phase_sums * ACT_LIMIT + bias_abs * 2.0 ** float(input_exp)
    budget = (EXACT_LIMIT // 2) / np.maximum(worst, 1e-12)
    limit = WEIGHT_INT_LIMIT / np.maximum(max_abs, 1e-12)
    return np.floor(np.log2(np.minimum(budget, limit))).astype(np.int64)


class IntSynthesis(nn.Module):
    """Four transposed convs (5x5, stride 2) with inverse GDN between, on integer grids.

    Parameter names match the float ``g_s`` it replaces (``0.weight``, ``1.beta`` ...),
    so a float model's weights load directly before fine-tuning."""

    def __init__(self, latent: int, hidden: int) -> None:
        super().__init__()
        chans = [latent, hidden, hidden, hidden, 3]
        layers: list[nn.Module] = []
        for i in range(STAGES):
            layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], 5, 2, 2, output_padding=1))
            if i < STAGES - 1:
                layers.append(_InverseGDN(chans[i + 1]))
        self.layers = nn.ModuleList(layers)
        # Exponents of the activation grids: input, then per stage (deconv output, GDN norm, GDN output).
        self.register_buffer("input_exp", torch.tensor(0.0))
        self.register_buffer("act_exp", torch.zeros(STAGES - 1))
        self.register_buffer("norm_exp", torch.zeros(STAGES - 1))
        self.register_buffer("out_exp", torch.zeros(STAGES - 1))
        self.register_buffer("calibrated", torch.tensor(0.0))

    # state-dict keys "0.weight" etc. like the float nn.Sequential g_s
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in list(state_dict):
            rest = key[len(prefix):]
            if key.startswith(prefix) and rest[:1].isdigit():
                state_dict[f"{prefix}layers.{rest}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def deconvs(self) -> list[nn.ConvTranspose2d]:
        return [m for m in self.layers if isinstance(m, nn.ConvTranspose2d)]

    def gdns(self) -> list["_InverseGDN"]:
        return [m for m in self.layers if isinstance(m, _InverseGDN)]

    # ---------------------------------------------------------------- float model
    def float_forward(self, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
        """The plain float synthesis (for calibration and comparison)."""
        for i, (deconv, gdn) in enumerate(zip(self.deconvs(), self.gdns() + [None])):
            x = deconv(x)
            if gdn is None:
                break
            norm = gdn.norm(x)
            if record is not None:
                record.append((x.detach(), norm.detach(), (x * norm).detach()))
            x = x * norm
        return x.clamp(0.0, 1.0)

    @torch.no_grad()
    def calibrate(self, inputs: list[torch.Tensor], headroom: float = 1.25) -> dict:
        """Fix the activation exponents from the float model's ranges on ``inputs``."""
        peaks_in, stages = 0.0, [[0.0, 0.0, 0.0] for _ in range(STAGES - 1)]
        for x in inputs:
            peaks_in = max(peaks_in, float(x.abs().max()))
            record: list = []
            self.float_forward(x, record)
            for s, tensors in enumerate(record):
                for j, t in enumerate(tensors):
                    stages[s][j] = max(stages[s][j], float(t.abs().max()))

        def exponent(peak: float, limit: int) -> float:
            return float(math.floor(math.log2(limit / max(peak * headroom, 1e-6))))

        self.input_exp.fill_(exponent(peaks_in, ACT_LIMIT))
        for s, (act, norm, out) in enumerate(stages):
            self.act_exp[s] = exponent(act, ACT_LIMIT)
            self.norm_exp[s] = exponent(norm, NORM_LIMIT)
            self.out_exp[s] = exponent(out, ACT_LIMIT)
        self.calibrated.fill_(1.0)
        return {"input_peak": peaks_in, "stage_peaks": stages}

    # ---------------------------------------------------------------- integer grids
    def integer_tensors(self, exact: bool) -> list[dict[str, torch.Tensor]]:
        """Per stage: integer weights/biases and the shifts (straight-through when not exact)."""
        if not bool(self.calibrated):
            raise ConfigError("IntSynthesis is not calibrated: call calibrate() before using it")
        stages = []
        in_exp = self.input_exp
        for s, deconv in enumerate(self.deconvs()):
            last = s == STAGES - 1
            weight, bias = deconv.weight, deconv.bias
            if last:   # output in pixel units
                weight, bias = weight * PIXEL_MAX, bias * PIXEL_MAX
            w_np = weight.detach().cpu().numpy()
            w_exp = torch.from_numpy(weight_exponents(
                deconv_phase_sums(w_np), np.abs(w_np).max(axis=(0, 2, 3)),
                np.abs(bias.detach().cpu().numpy()), float(in_exp)).astype(np.float32))
            w_int = _round(weight * torch.pow(2.0, w_exp).view(1, -1, 1, 1), exact)
            b_int = _round(bias * torch.pow(2.0, w_exp + in_exp), exact)
            stage = {"weight": w_int, "bias": b_int, "acc_exp": w_exp + in_exp}
            if last:
                stage["shift"] = -stage["acc_exp"]
            else:
                gdn = self.gdns()[s]
                act_exp, norm_exp, out_exp = self.act_exp[s], self.norm_exp[s], self.out_exp[s]
                stage["shift"] = act_exp - stage["acc_exp"]
                gamma = gdn.gamma.abs()[:, :, 0, 0]
                beta = gdn.beta.abs() + 1e-6
                g_np = gamma.detach().cpu().numpy()
                g_exp = torch.from_numpy(weight_exponents(
                    g_np.sum(axis=1), g_np.max(axis=1), beta.detach().cpu().numpy(),
                    float(act_exp)).astype(np.float32))
                stage["gamma"] = _round(gamma * torch.pow(2.0, g_exp)[:, None], exact)[:, :, None, None]
                stage["beta"] = _round(beta * torch.pow(2.0, g_exp + act_exp), exact)
                stage["norm_shift"] = norm_exp - (g_exp + act_exp)
                stage["out_shift"] = out_exp - act_exp - norm_exp
                in_exp = out_exp
            stages.append(stage)
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training: real-valued input (y_hat * inverse gain) -> picture in [0, 1], with the
        integer arithmetic of the frozen graph and straight-through gradients."""
        a = torch.clamp(_ste(x * torch.pow(2.0, self.input_exp),
                             torch.floor(x * torch.pow(2.0, self.input_exp) + 0.5)), -ACT_LIMIT, ACT_LIMIT)
        return integer_synthesis(a, self.integer_tensors(exact=False), exact=False) / PIXEL_MAX


def _round(x: torch.Tensor, exact: bool) -> torch.Tensor:
    return torch.round(x) if exact else _ste(x, torch.round(x))


def integer_synthesis(a: torch.Tensor, stages: list[dict[str, torch.Tensor]], exact: bool) -> torch.Tensor:
    """Integer input grid -> integer pixels 0..255 (float32 tensors holding integers)."""
    for s, st in enumerate(stages):
        acc = F.conv_transpose2d(a, st["weight"], st["bias"], stride=2, padding=2, output_padding=1)
        if s == len(stages) - 1:
            return _requantise(acc, st["shift"], 0.0, PIXEL_MAX, exact)
        x = _requantise(acc, st["shift"], -ACT_LIMIT, ACT_LIMIT, exact)
        norm_acc = F.conv2d(torch.abs(x), st["gamma"], st["beta"])
        norm = _requantise(norm_acc, st["norm_shift"], 0.0, NORM_LIMIT, exact)
        a = _requantise(x * norm, st["out_shift"], -ACT_LIMIT, ACT_LIMIT, exact)
    return a


class _InverseGDN(nn.Module):
    """Parameters of the simplified inverse GDN (same names as camera_codec.GDN)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.abs(), self.gamma.abs(), self.beta.abs() + 1e-6)


# -------------------------------------------------------------------- frozen form

FROZEN_KEYS = ("weight", "bias", "shift", "gamma", "beta", "norm_shift", "out_shift")


def freeze(synthesis: IntSynthesis) -> dict[str, np.ndarray]:
    """Integer tensors of the synthesis (``synthesis.*`` keys), checked for exactness."""
    tensors: dict[str, np.ndarray] = {"synthesis.input_exp": np.array(float(synthesis.input_exp), np.float32)}
    with torch.no_grad():
        stages = synthesis.integer_tensors(exact=True)
    for s, st in enumerate(stages):
        for key in FROZEN_KEYS:
            if key in st:
                tensors[f"synthesis.{s}.{key}"] = st[key].detach().cpu().numpy().astype(np.float32)
    check_exactness(tensors)
    return tensors


def frozen_stages(tensors: dict[str, np.ndarray]) -> list[dict[str, torch.Tensor]]:
    stages = []
    s = 0
    while f"synthesis.{s}.weight" in tensors:
        stages.append({k: torch.from_numpy(np.asarray(tensors[f"synthesis.{s}.{k}"], np.float32))
                       for k in FROZEN_KEYS if f"synthesis.{s}.{k}" in tensors})
        s += 1
    return stages


def check_exactness(tensors: dict[str, np.ndarray]) -> None:
    """Refuse integer tensors whose worst-case sums could leave float32's exact range."""
    s = 0
    while f"synthesis.{s}.weight" in tensors:
        weight = tensors[f"synthesis.{s}.weight"]
        bias = np.abs(tensors[f"synthesis.{s}.bias"].astype(np.float64))
        for name, values in ((f"synthesis.{s}.weight", weight), (f"synthesis.{s}.bias", bias)):
            if not np.array_equal(values, np.round(values)):
                raise ConfigError(f"{name} is not integer-valued")
        worst = deconv_phase_sums(weight) * ACT_LIMIT + bias
        checks = [("transposed conv", worst)]
        if f"synthesis.{s}.gamma" in tensors:
            gamma = tensors[f"synthesis.{s}.gamma"][:, :, 0, 0].astype(np.float64)
            checks.append(("inverse GDN", np.abs(gamma).sum(axis=1) * ACT_LIMIT
                           + np.abs(tensors[f"synthesis.{s}.beta"].astype(np.float64))))
        for what, sums in checks:
            if sums.max() >= EXACT_LIMIT:
                raise ConfigError(f"stage {s} {what}: worst-case sum {sums.max():.0f} reaches 2**24, "
                                  "float32 would round it; lower the weight grid")
        shifts = [tensors[f"synthesis.{s}.{k}"] for k in ("shift", "norm_shift", "out_shift")
                  if f"synthesis.{s}.{k}" in tensors]
        for shift in shifts:
            if np.max(shift) > -1:
                # A left shift would put +0.5 below the grid after constant folding.
                raise ConfigError(f"stage {s}: rescale exponent {np.max(shift)} is not a right shift")
        s += 1


def input_integers(y_hat: np.ndarray, inv_gain: np.ndarray, input_exp: float) -> np.ndarray:
    """The synthesis input grid, in float64 numpy: identical on every machine."""
    scaled = y_hat.astype(np.float64) * inv_gain.astype(np.float64) * (2.0 ** float(input_exp))
    return np.clip(np.floor(scaled + 0.5), -ACT_LIMIT, ACT_LIMIT).astype(np.float32)


class FrozenSynthesis(nn.Module):
    """The exported decoder graph: integer input grid -> integer pixels (float32 0..255)."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.stages = frozen_stages(tensors)
        for s, st in enumerate(self.stages):
            for key, value in st.items():
                self.register_buffer(f"s{s}_{key}", value, persistent=False)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        stages = [{k: getattr(self, f"s{s}_{k}") for k in st} for s, st in enumerate(self.stages)]
        return integer_synthesis(grid, stages, exact=True)
