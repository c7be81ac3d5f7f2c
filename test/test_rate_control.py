"""RateController (bandwidth target) against synthetic, seeded size models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sensor_codec.codecs import codec_class
from sensor_codec.errors import ConfigError
from sensor_codec.rate_control import RateController, quality_ladder

RATE_HZ = 10.0
LEVELS = 8
RATIO = 1.3        # bytes grow by this factor per level in the size model
TOLERANCE = 0.03   # achieved kbit/s within 3 % of the target once settled


def simulate(controller: RateController, base_bytes, frames: int, rate_hz: float = RATE_HZ,
             noise: float = 0.08, seed: int = 0):
    """Code ``frames`` frames: size = base(k) * RATIO**level * lognormal noise."""
    rng = np.random.default_rng(seed)
    levels, sizes = [], []
    for k in range(frames):
        decision = controller.decide(k / rate_hz)
        size = int(base_bytes(k) * RATIO ** decision.level * math.exp(rng.normal(0.0, noise)))
        controller.record(decision.level, size)
        levels.append(decision.level)
        sizes.append(size)
    return np.array(levels), np.array(sizes)


def kbps(sizes: np.ndarray, rate_hz: float = RATE_HZ) -> float:
    return sizes.sum() * 8 / 1000 / (len(sizes) / rate_hz)


def test_converges_to_the_target_between_two_levels():
    # 400 kbit/s at 10 Hz = 5000 bytes a frame; 2000 * 1.3**l crosses it at l = 3.49.
    controller = RateController(400.0, LEVELS)
    levels, sizes = simulate(controller, lambda k: 2000, 400)
    assert levels[0] == 0  # nothing known yet: the smallest level
    settled = slice(50, 400)
    assert kbps(sizes[settled]) == pytest.approx(400.0, rel=TOLERANCE)
    counts = np.bincount(levels[settled], minlength=LEVELS)
    assert counts[3] + counts[4] >= 0.95 * len(levels[settled])  # the two straddling levels
    assert counts[3] > 0 and counts[4] > 0
    assert controller.achieved_kbps() == pytest.approx(400.0, rel=0.1)
    assert controller.frame_rate_hz == pytest.approx(RATE_HZ)
    assert controller.fallbacks == 0


def test_reacts_to_a_scene_change():
    # At frame 200 every frame gets 1.75x bigger: the right levels become 1 and 2.
    controller = RateController(400.0, LEVELS)
    levels, sizes = simulate(controller, lambda k: 2000 if k < 200 else 3500, 400)
    assert levels[150:200].mean() > 3.0
    assert levels[215:400].mean() < 2.0  # settled lower within 15 frames
    assert set(np.unique(levels[215:400])) <= {1, 2, 3}
    assert kbps(sizes[215:400]) == pytest.approx(400.0, rel=TOLERANCE)
    # The 15 frames of the change itself overshoot by less than half a second's budget.
    assert kbps(sizes[200:215]) < 400.0 * 1.2


def test_a_one_frame_burst_is_absorbed():
    controller = RateController(400.0, LEVELS)
    levels, sizes = simulate(controller, lambda k: 10_000 if k == 100 else 2000, 200)
    before = levels[80:100].mean()
    assert levels[101] < before  # it pays back the burst
    assert levels[112:130].mean() == pytest.approx(before, abs=0.6)  # and returns
    assert kbps(sizes[90:130]) == pytest.approx(400.0, rel=0.05)


def test_never_exceeds_the_top_level_and_keeps_what_it_cannot_spend():
    controller = RateController(1e6, LEVELS)
    levels, sizes = simulate(controller, lambda k: 2000, 100)
    assert levels.max() == LEVELS - 1
    assert (levels[1:] == LEVELS - 1).all()
    assert controller.fallbacks == 0
    # It sends the top level's rate (2000 * 1.3**7 bytes at 10 Hz), far below the target.
    assert kbps(sizes[1:]) == pytest.approx(2000 * RATIO ** 7 * 8 / 1000 * RATE_HZ, rel=0.05)
    # The bucket holds at most burst_s of credit, however long it goes unspent.
    assert controller.snapshot()["credit_bytes"] <= controller.capacity_bytes


def test_falls_back_to_the_lowest_level_and_counts_it():
    controller = RateController(10.0, LEVELS)  # 125 bytes a frame; level 0 takes 2000
    levels, sizes = simulate(controller, lambda k: 2000, 100)
    assert (levels == 0).all()
    assert controller.fallbacks == 99  # every frame after the first, which had no model
    assert kbps(sizes) == pytest.approx(160.0, rel=0.05)  # level 0's 2000 bytes at 10 Hz
    assert controller.snapshot()["credit_bytes"] == pytest.approx(-controller.capacity_bytes)


def test_a_clock_jumping_back_restarts_the_refill():
    controller = RateController(400.0, LEVELS)
    simulate(controller, lambda k: 2000, 100)
    before = controller.snapshot()
    # A bag starting over: stamps go back 10 s. No credit is made from that
    # step, and from the new time on the bucket fills again.
    first = controller.decide(0.0)
    controller.record(first.level, 5000)
    assert controller.snapshot()["credit_bytes"] <= before["credit_bytes"]
    levels, sizes = [], []
    for k in range(1, 100):
        decision = controller.decide(k / RATE_HZ)
        controller.record(decision.level, int(2000 * RATIO ** decision.level))
        levels.append(decision.level)
        sizes.append(int(2000 * RATIO ** decision.level))
    assert kbps(np.array(sizes[20:])) == pytest.approx(400.0, rel=TOLERANCE)
    assert controller.frame_rate_hz == pytest.approx(RATE_HZ, rel=0.01)


def test_a_pause_does_not_spoil_the_frame_rate_and_a_lasting_change_is_followed():
    controller = RateController(400.0, LEVELS)
    for k in range(50):
        controller.record(controller.decide(k * 0.1).level, 2000)
    after_pause = controller.decide(4.9 + 60.0)  # a minute's pause
    controller.record(after_pause.level, 2000)
    assert controller.frame_rate_hz == pytest.approx(10.0 / 1.2)  # moved once, by at most 1.2x
    # It restarts with one frame's budget (50 kB/s * 0.12 s), not a minute's savings.
    assert after_pause.allowance_bytes == pytest.approx(50_000 * 0.12)
    assert controller.achieved_kbps() == 0.0  # one frame since the pause: no rate yet
    now = 4.9 + 60.0
    for k in range(30):  # now 2 Hz for good
        now += 0.5
        controller.record(controller.decide(now).level, 2000)
    assert controller.frame_rate_hz == pytest.approx(2.0, rel=0.01)
    assert controller.achieved_kbps() == pytest.approx(2000 * 8 / 1000 * 2.0)


def test_uses_the_observed_frame_rate():
    # Same target, twice the frame rate: 2500 bytes a frame, between levels 0 and 1
    # (2000 and 2600 bytes) instead of 3 and 4.
    controller = RateController(400.0, LEVELS, nominal_rate_hz=10.0)
    levels, sizes = simulate(controller, lambda k: 2000, 400, rate_hz=20.0)
    assert controller.frame_rate_hz == pytest.approx(20.0)
    assert kbps(sizes[50:], rate_hz=20.0) == pytest.approx(400.0, rel=TOLERANCE)
    assert set(np.unique(levels[50:])) <= {0, 1, 2}


def test_prior_and_interpolation_for_levels_not_seen():
    prior = [1000 * 2 ** level for level in range(4)]
    controller = RateController(80.0, 4, prior_bytes=prior)  # 1000 bytes a frame at 10 Hz
    np.testing.assert_allclose(controller.predicted_bytes(), prior)
    first = controller.decide(0.0)
    assert (first.level, first.predicted_bytes) == (0, pytest.approx(1000.0))

    # Without a prior, one observation scales the geometric ladder.
    controller = RateController(400.0, 4, level_ratio=2.0, smoothing=0.5, level_smoothing=0.0)
    assert controller.predicted_bytes() is None
    controller.decide(0.0)
    controller.record(0, 1000)
    np.testing.assert_allclose(controller.predicted_bytes(), [1000, 2000, 4000, 8000])
    # Level 3 at 16000 (twice the ladder): the scene term takes half the log error
    # (smoothing 0.5), moving every level by sqrt(2).
    controller.decide(0.1)
    controller.record(3, 16000)
    np.testing.assert_allclose(controller.predicted_bytes(),
                               np.array([1000, 2000, 4000, 8000]) * math.sqrt(2))


def test_per_level_offsets_are_interpolated_between_seen_levels():
    controller = RateController(400.0, 5, level_ratio=2.0, smoothing=0.0, level_smoothing=1.0)
    controller.decide(0.0)
    controller.record(0, 1000)   # sets the scale: ladder 1000, 2000, 4000, ...
    controller.decide(0.1)
    controller.record(4, 64000)  # 4x the ladder at level 4: offset log(4) there
    predicted = controller.predicted_bytes()
    # Offsets 0 at level 0, log 4 at level 4, linear in between: x1, x1.41, x2, x2.83, x4.
    np.testing.assert_allclose(predicted, [1000, 2000 * 2 ** 0.5, 4000 * 2, 8000 * 2 ** 1.5,
                                           64000])


def test_predictions_never_decrease_with_the_level():
    controller = RateController(400.0, 3, level_ratio=1.5, smoothing=0.0, level_smoothing=1.0)
    controller.decide(0.0)
    controller.record(1, 3000)
    controller.decide(0.1)
    controller.record(2, 1000)  # a noisy small frame at the top level
    predicted = controller.predicted_bytes()
    assert (np.diff(predicted) >= 0).all()
    assert predicted[2] == pytest.approx(predicted[1])


@pytest.mark.parametrize("kwargs, message", [
    ({"target_kbps": 0.0}, "bandwidth target must be a positive kbit/s value, got 0.0"),
    ({"target_kbps": float("nan")}, "bandwidth target"),
    ({"num_levels": 0}, "num_levels"),
    ({"prior_bytes": [1, 2]}, "prior_bytes needs 8 positive sizes"),
    ({"burst_s": -1.0}, "burst_s must be a positive number"),
    ({"smoothing": 1.5}, "smoothing must be within 0..1"),
    ({"level_ratio": 0.5}, "level_ratio must be >= 1"),
])
def test_invalid_settings_raise_config_error(kwargs, message):
    args = {"target_kbps": 400.0, "num_levels": LEVELS, **kwargs}
    with pytest.raises(ConfigError, match=message):
        RateController(args.pop("target_kbps"), args.pop("num_levels"), **args)


def test_record_checks_level_and_size():
    controller = RateController(400.0, LEVELS)
    with pytest.raises(ConfigError, match="level 8 is outside 0..7"):
        controller.record(8, 100)
    with pytest.raises(ConfigError, match="payload size must be positive"):
        controller.record(0, 0)


def test_quality_ladders_of_codecs():
    # A short range (the learned codec's levels): every value.
    (learned,) = [p for p in codec_class("camera_learned").params if p.name == "quality"]
    assert learned.max - learned.min + 1 <= 12
    assert quality_ladder("camera_learned", codec_class("camera_learned").params) == \
        ("quality", list(range(learned.min, learned.max + 1)))
    setting, values = quality_ladder("jpeg", codec_class("jpeg").params)
    assert setting == "quality"
    assert values[0] == 10 and values[-1] == 100 and len(values) == 12
    assert values == sorted(values)
    for codec in ("png", "x265", "zstd"):
        with pytest.raises(ConfigError, match=f"codec '{codec}' has no integer 'quality'"):
            quality_ladder(codec, codec_class(codec).params)
