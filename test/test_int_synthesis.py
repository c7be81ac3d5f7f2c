"""The integer-exact synthesis: float32 graphs must equal exact integer arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sensor_codec.errors import ConfigError
from sensor_codec.learned.int_synthesis import (ACT_LIMIT, EXACT_LIMIT, NORM_LIMIT, FrozenSynthesis,
                                                IntSynthesis, check_exactness, deconv_phase_sums,
                                                freeze, input_integers)

LATENT, HIDDEN = 12, 8


@pytest.fixture(scope="module")
def synthesis() -> IntSynthesis:
    torch.manual_seed(0)
    net = IntSynthesis(LATENT, HIDDEN)
    with torch.no_grad():
        for gdn in net.gdns():
            gdn.gamma.add_(0.05 * torch.rand_like(gdn.gamma))
    net.calibrate([3.0 * torch.randn(2, LATENT, 5, 7) for _ in range(3)])
    return net


def _shift_round(acc: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """floor(acc * 2**shift + 0.5) for right shifts, in exact integer arithmetic."""
    k = (-np.asarray(shift, np.int64)).reshape(-1, 1, 1) if np.ndim(shift) else -int(shift)
    return (acc + (np.int64(1) << (k - 1))) >> k


def _deconv_int(a: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1) in int64."""
    cin, h, w = a.shape
    full = np.zeros((weight.shape[1], 2 * h + 4, 2 * w + 4), np.int64)
    for ky in range(5):
        for kx in range(5):
            full[:, ky:ky + 2 * h:2, kx:kx + 2 * w:2] += np.einsum("co,chw->ohw", weight[:, :, ky, kx], a)
    return full[:, 2:2 + 2 * h, 2:2 + 2 * w] + bias[:, None, None]


def reference_synthesis(tensors: dict, grid: np.ndarray) -> np.ndarray:
    a = grid.astype(np.int64)
    s = 0
    while f"synthesis.{s}.weight" in tensors:
        t = {k.split(".")[-1]: v for k, v in tensors.items() if k.startswith(f"synthesis.{s}.")}
        acc = _deconv_int(a, t["weight"].astype(np.int64), t["bias"].astype(np.int64))
        if "gamma" not in t:
            return np.clip(_shift_round(acc, t["shift"]), 0, 255)
        x = np.clip(_shift_round(acc, t["shift"]), -ACT_LIMIT, ACT_LIMIT)
        norm_acc = np.einsum("oc,chw->ohw", t["gamma"][:, :, 0, 0].astype(np.int64), np.abs(x))
        norm = np.clip(_shift_round(norm_acc + t["beta"].astype(np.int64)[:, None, None], t["norm_shift"]),
                       0, NORM_LIMIT)
        a = np.clip(_shift_round(x * norm, t["out_shift"]), -ACT_LIMIT, ACT_LIMIT)
        s += 1
    raise AssertionError("no output stage")


def test_float32_graph_equals_exact_integer_arithmetic(synthesis):
    tensors = freeze(synthesis)
    frozen = FrozenSynthesis(tensors)
    rng = np.random.default_rng(1)
    for trial in range(3):
        grid = rng.integers(-ACT_LIMIT, ACT_LIMIT + 1, (LATENT, 3 + trial, 4)).astype(np.float32)
        with torch.no_grad():
            got = frozen(torch.from_numpy(grid[None]))[0].numpy()
        expected = reference_synthesis(tensors, grid)
        assert got.shape == (3, 16 * grid.shape[1], 16 * grid.shape[2])
        np.testing.assert_array_equal(got, expected.astype(np.float32))
        # A real picture, not a clipped constant.
        assert len(np.unique(got)) > 20


def test_summation_order_does_not_change_the_pixels(synthesis):
    """Permuting input channels reorders every sum; float32 integers below 2**24 do not care."""
    tensors = freeze(synthesis)
    permuted = dict(tensors)
    order = np.random.default_rng(2).permutation(LATENT)
    permuted["synthesis.0.weight"] = tensors["synthesis.0.weight"][order]
    grid = np.random.default_rng(3).integers(-ACT_LIMIT, ACT_LIMIT + 1, (1, LATENT, 6, 5)).astype(np.float32)
    with torch.no_grad():
        a = FrozenSynthesis(tensors)(torch.from_numpy(grid))
        b = FrozenSynthesis(permuted)(torch.from_numpy(grid[:, order]))
    assert torch.equal(a, b)


def test_weight_grids_respect_the_exact_range(synthesis):
    tensors = freeze(synthesis)
    for s in range(4):
        worst = deconv_phase_sums(tensors[f"synthesis.{s}.weight"]) * ACT_LIMIT + np.abs(tensors[f"synthesis.{s}.bias"])
        assert worst.max() < EXACT_LIMIT
        assert worst.max() > EXACT_LIMIT / 8   # the grid is as fine as the budget allows


def test_exactness_check_refuses_unsafe_tensors(synthesis):
    tensors = freeze(synthesis)
    too_big = dict(tensors)
    too_big["synthesis.1.weight"] = tensors["synthesis.1.weight"] * 16
    with pytest.raises(ConfigError, match="2\\*\\*24"):
        check_exactness(too_big)
    fractional = dict(tensors)
    fractional["synthesis.0.bias"] = tensors["synthesis.0.bias"] + 0.25
    with pytest.raises(ConfigError, match="not integer-valued"):
        check_exactness(fractional)
    left_shift = dict(tensors)
    left_shift["synthesis.0.out_shift"] = np.array(2.0, np.float32)
    with pytest.raises(ConfigError, match="not a right shift"):
        check_exactness(left_shift)


def test_training_form_tracks_the_frozen_graph_and_has_gradients(synthesis):
    torch.manual_seed(4)
    x = 2.0 * torch.randn(1, LATENT, 4, 4)
    tensors = freeze(synthesis)
    grid = input_integers(x.numpy(), np.ones_like(x.numpy()), float(synthesis.input_exp))
    with torch.no_grad():
        frozen = FrozenSynthesis(tensors)(torch.from_numpy(grid))
    trained = synthesis(x)
    # Straight-through rounding adds float noise only: at most one grey level anywhere.
    assert (trained.detach() * 255 - frozen).abs().max() <= 1.0
    trained.mean().backward()
    grads = [p.grad for p in synthesis.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert synthesis.deconvs()[0].weight.grad.abs().sum() > 0
    synthesis.zero_grad()


def test_input_grid_is_float64_rounding_with_clipping():
    y_hat = np.array([[[[0.26, -0.26, 1000.0]]]])
    inv_gain = np.array([[[[2.0, 2.0, 1.0]]]], np.float32)
    grid = input_integers(y_hat, inv_gain, 3.0)
    np.testing.assert_array_equal(grid, [[[[4.0, -4.0, ACT_LIMIT]]]])
    assert grid.dtype == np.float32


def test_float_release_weights_load_under_the_old_names():
    """Releases before the integer synthesis stored g_s as nn.Sequential ("0.weight", "1.beta")."""
    net = IntSynthesis(LATENT, HIDDEN)
    old = {k.replace("layers.", ""): v.clone() + 1.0 for k, v in net.state_dict().items() if "layers." in k}
    result = net.load_state_dict(old, strict=False)
    assert result.unexpected_keys == []
    assert set(result.missing_keys) == {"input_exp", "act_exp", "norm_exp", "out_exp", "calibrated"}
    assert torch.equal(net.layers[1].beta, old["1.beta"])
    with pytest.raises(ConfigError, match="not calibrated"):
        net(torch.zeros(1, LATENT, 2, 2))
