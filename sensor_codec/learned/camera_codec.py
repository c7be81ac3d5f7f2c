"""The learned camera codec network (PyTorch): training model and export graphs.

Data flow (strides relative to the frame, padded to a multiple of 64)::

    image (1/1) --g_a conv/GDN x3--> 1/8 --+-- GDN, conv/2 --> y (1/16, M ch)
    backbone tap (1/8, 128 ch) --1x1--------+
    y * gain[level] * qmap  --h_a--> z (1/64, CZ ch)  -> round, clamp, code with frozen tables
    z --fixed-point h_s (entropy.hyper_synthesis_int)--> mean, scale index of y
    round(y_s - mean) -> code with frozen tables
    decoder: y_hat * inv_gain[level] / qmap --g_s deconv/IGDN x4--> image
             (integer-exact: int_synthesis.py, the same pixels on every backend)

Variable rate: one network, ``LEVELS`` quality levels, each with a learned gain
and inverse-gain vector over the latent channels (asymmetric gained
compression, Cui et al. 2021) trained with its own rate-distortion lambda.
Semantic rate allocation: a quality map (levels 0..3 per 32x32 block, chosen
from the backbone's semantic map and ``config/semantic_importance.yaml``)
multiplies the gain by ``QMAP_GAINS[level]``; training weights the distortion
by the same per-class importance.

The synthesis is integer-exact (``int_synthesis.IntSynthesis``): after its
activation grids are calibrated it trains on them with straight-through
gradients, and the exported decoder graph maps integers to integer pixels.
The hyper-synthesis trains with fake quantisation (weights on a 2**-10 grid,
activations on a 2**-4 grid, straight-through gradients) so that its integer
twin in ``entropy.py`` computes what training optimised.

Contract (as CompressAI): ``forward`` returns reconstruction and likelihoods
for training; compress/decompress live in ``camera_runtime`` on top of the
exported graphs, because they must run on any backend.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .backbone_meta import TAP_CHANNELS
from .entropy import (ACT_LIMIT, FRAC_ACT, FRAC_WEIGHT, NUM_SCALES, SCALE_MAX, SCALE_MIN,
                      WEIGHT_LIMIT, Z_LIMIT)
from .int_synthesis import FrozenSynthesis, IntSynthesis, freeze
from .runtime import register_torch_graphs

LEVELS = 10
# Rate-distortion trade-off per level: loss = bpp + lambda * 255**2 * weighted MSE.
LAMBDAS = (0.0003, 0.0005, 0.0009, 0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483, 0.0932)
QMAP_GAINS = (0.55, 0.75, 1.0, 1.35)   # latent gain multiplier per quality-map level
NEUTRAL_QMAP_LEVEL = 2                 # gain 1.0: what "no semantic allocation" sends
PAD_MULTIPLE = 64
HIDDEN = 64          # N
LATENT = 96          # M
HYPER = 48           # CZ

ENCODER_INPUTS = ["image", "tap", "gain"]
ENCODER_OUTPUTS = ["y", "z"]
DECODER_INPUTS = ["grid"]      # int_synthesis.input_integers(y_hat, inverse gain)
DECODER_OUTPUTS = ["pixels"]   # integers 0..255 as float32


class GDN(nn.Module):
    """Simplified generalised divisive normalisation (Johnston et al. 2019):
    y = x / (beta + gamma * |x|); inverse multiplies instead."""

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = F.conv2d(x.abs(), self.gamma.abs(), self.beta.abs() + 1e-6)
        return x * norm if self.inverse else x / norm


def _conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _floor_half_ste(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 0.5) with identity gradient: the integer path's rounding."""
    return x + (torch.floor(x + 0.5) - x).detach()


class FixedPointConv(nn.Module):
    """3x3 conv trained on the fixed-point grid of ``entropy.hyper_synthesis_int``."""

    def __init__(self, cin: int, cout: int, upsample: bool, relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        self.upsample = upsample
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_scale, a_scale = 2.0 ** FRAC_WEIGHT, 2.0 ** FRAC_ACT
        weight = torch.clamp(_round_ste(self.conv.weight * w_scale), -WEIGHT_LIMIT, WEIGHT_LIMIT) / w_scale
        bias = _round_ste(self.conv.bias * w_scale * a_scale) / (w_scale * a_scale)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = _floor_half_ste(F.conv2d(x, weight, bias, padding=1) * a_scale)
        low = 0.0 if self.relu else -ACT_LIMIT
        return torch.clamp(x, low, ACT_LIMIT) / a_scale


class CameraCodecNet(nn.Module):
    """Analysis, hyper-analysis, fixed-point hyper-synthesis, synthesis, gains, z prior."""

    def __init__(self) -> None:
        super().__init__()
        n, m, cz = HIDDEN, LATENT, HYPER
        self.g_a_image = nn.Sequential(_conv(3, n), GDN(n), _conv(n, n), GDN(n), _conv(n, n))
        self.g_a_tap = nn.Conv2d(TAP_CHANNELS, n, 1)
        self.g_a_out = nn.Sequential(GDN(n), _conv(n, m))
        self.h_a = nn.Sequential(nn.Conv2d(m, n, 3, 1, 1), nn.ReLU(), _conv(n, n), nn.ReLU(), _conv(n, cz))
        self.h_s = nn.Sequential(FixedPointConv(cz, n, upsample=False, relu=True),
                                 FixedPointConv(n, n, upsample=True, relu=True),
                                 FixedPointConv(n, 2 * m, upsample=True, relu=False))
        self.g_s = IntSynthesis(m, n)
        # Gains start log-spaced so low levels quantise coarsely from the first step.
        start = torch.linspace(math.log(0.1), math.log(2.5), LEVELS)
        self.log_gain = nn.Parameter(start[:, None].repeat(1, m))
        self.log_inv_gain = nn.Parameter(-start[:, None].repeat(1, m))
        self.z_log_scale = nn.Parameter(torch.zeros(cz))
        self.register_buffer("qmap_gains", torch.tensor(QMAP_GAINS), persistent=False)

    # -- pieces shared by training and the export graphs
    def analysis(self, image: torch.Tensor, tap: torch.Tensor) -> torch.Tensor:
        return self.g_a_out(self.g_a_image(image) + self.g_a_tap(tap))

    def gain_map(self, level: torch.Tensor, qmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """level (B,) long, qmap (B,h16,w16) long -> gain, inverse gain maps (B,M,h16,w16)."""
        spatial = self.qmap_gains[qmap][:, None]
        gain = torch.exp(self.log_gain[level])[:, :, None, None] * spatial
        inv_gain = torch.exp(self.log_inv_gain[level])[:, :, None, None] / spatial
        return gain, inv_gain

    def hyper_params(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.h_s(z_hat)
        mean, logit = params[:, :LATENT], params[:, LATENT:]
        # Scale index = round(logit) at inference; continuous here for gradients.
        position = torch.clamp(logit, 0.0, NUM_SCALES - 1)
        scale = SCALE_MIN * torch.exp(position * (math.log(SCALE_MAX / SCALE_MIN) / (NUM_SCALES - 1)))
        return mean, scale

    def synthesis(self, x: torch.Tensor) -> torch.Tensor:
        """Float synthesis until its integer grids are calibrated (training from scratch)."""
        return self.g_s(x) if bool(self.g_s.calibrated) else self.g_s.float_forward(x)

    @torch.no_grad()
    def synthesis_input(self, image: torch.Tensor, tap: torch.Tensor, level: torch.Tensor,
                        qmap: torch.Tensor) -> torch.Tensor:
        """y_hat * inverse gain exactly as the decoder sees it (for calibrating the synthesis)."""
        gain, inv_gain = self.gain_map(level, qmap)
        y = self.analysis(image, tap) * gain
        z_hat = torch.clamp(torch.round(self.h_a(y)), -Z_LIMIT, Z_LIMIT)
        mean, _ = self.hyper_params(z_hat)
        return (torch.round(y - mean) + mean) * inv_gain

    def forward(self, image: torch.Tensor, tap: torch.Tensor, level: torch.Tensor,
                qmap: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training pass: noisy latents for the rate, straight-through rounding for the decoder."""
        gain, inv_gain = self.gain_map(level, qmap)
        y = self.analysis(image, tap) * gain
        z = self.h_a(y)
        z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        z_hat = torch.clamp(_round_ste(z), -Z_LIMIT, Z_LIMIT)
        z_scale = torch.exp(self.z_log_scale).clamp(SCALE_MIN, SCALE_MAX)[None, :, None, None]
        z_likelihood = _gaussian_likelihood(z_noisy, torch.zeros_like(z), z_scale)
        mean, scale = self.hyper_params(z_hat)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        y_likelihood = _gaussian_likelihood(y_noisy - mean, torch.zeros_like(y), scale)
        y_hat = _round_ste(y - mean) + mean
        x_hat = self.synthesis(y_hat * inv_gain)
        return {"x_hat": x_hat, "y_likelihood": y_likelihood, "z_likelihood": z_likelihood}


def _gaussian_likelihood(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """P(x rounded) under N(mean, scale), floored at 1e-9 like CompressAI."""
    scale = scale.clamp(min=SCALE_MIN)
    centred = (x - mean).abs()
    upper = 0.5 * torch.erfc(-(0.5 - centred) / (scale * math.sqrt(2)))
    lower = 0.5 * torch.erfc(-(-0.5 - centred) / (scale * math.sqrt(2)))
    return (upper - lower).clamp(min=1e-9)


class EncoderGraph(nn.Module):
    """Exported encoder: (image, tap, gain map) -> (gained latent y, hyper latent z).
    Both outputs are float; rounding and clamping happen in the runtime."""

    def __init__(self, net: CameraCodecNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, tap: torch.Tensor, gain: torch.Tensor):
        y = self.net.analysis(image, tap) * gain
        return y, self.net.h_a(y)


def decoder_graph(tensors: dict[str, np.ndarray]) -> FrozenSynthesis:
    """Exported decoder: integer input grid -> integer pixels, from the frozen ``synthesis.*``
    tensors (never from float weights, so ONNX and PyTorch hold the same integers)."""
    return FrozenSynthesis(tensors).eval()


# ---------------------------------------------------------------- release tensors

def frozen_tensors(net: CameraCodecNet) -> dict[str, np.ndarray]:
    """Everything the runtime needs that is not an ONNX graph: integer hyper-synthesis,
    gain tables, z table indices and the probability tables (the 'entropy.*' keys)."""
    from .entropy import build_frequency_tables, quantise_hyper_layer, scale_table

    tensors: dict[str, np.ndarray] = freeze(net.g_s)
    for i, layer in enumerate(net.h_s):
        w, b = quantise_hyper_layer(layer.conv.weight.detach().numpy(), layer.conv.bias.detach().numpy())
        tensors[f"entropy.hs{i}.weight"] = w
        tensors[f"entropy.hs{i}.bias"] = b
        tensors[f"entropy.hs{i}.flags"] = np.array([int(layer.upsample), int(layer.relu)], dtype=np.int32)
    tensors["entropy.gain"] = torch.exp(net.log_gain).detach().numpy().astype(np.float32)
    tensors["entropy.inv_gain"] = torch.exp(net.log_inv_gain).detach().numpy().astype(np.float32)
    tensors["entropy.qmap_gains"] = np.array(QMAP_GAINS, dtype=np.float32)
    z_scale = torch.exp(net.z_log_scale).clamp(SCALE_MIN, SCALE_MAX).detach().numpy().astype(np.float64)
    table = scale_table()
    tensors["entropy.z_scale_index"] = np.abs(np.log(z_scale)[:, None] - np.log(table)[None]).argmin(1).astype(np.int32)
    freqs, halves = build_frequency_tables()
    tensors["entropy.freqs"] = freqs
    tensors["entropy.halves"] = halves
    return tensors


def net_from_tensors(tensors: dict[str, np.ndarray]) -> CameraCodecNet:
    net = CameraCodecNet()
    state = {k[len("net."):]: torch.from_numpy(np.array(v, dtype=np.float32 if v.dtype == np.float16 else v.dtype))
             for k, v in tensors.items() if k.startswith("net.")}
    net.load_state_dict(state, strict=True)
    return net.eval()


@register_torch_graphs("camera")
def camera_graphs(tensors: dict[str, np.ndarray]) -> dict[str, nn.Module]:
    net = net_from_tensors(tensors)
    return {"encoder": EncoderGraph(net).eval(), "decoder": decoder_graph(tensors)}
