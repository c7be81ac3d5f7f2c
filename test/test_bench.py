"""Benchmark harness: metrics against hand-computed values, BD-rate, the x265
anchor codec, the runner and the ``sensor-codec bench`` CLI."""

from __future__ import annotations

import json
import math

import imagecodecs
import numpy as np
import pytest
from conftest import lidar_frame, radar_frame, synthetic_rgb

from sensor_codec.bench import bdrate, metrics, runner
from sensor_codec.cli import main
from sensor_codec.codecs import decode, encode, get_codec
from sensor_codec.errors import ConfigError, InvalidFrameError, WireFormatError
from sensor_codec.frames import CameraFrame, Modality, PointCloudFrame
from sensor_codec.wire import unpack

# --- image metrics -------------------------------------------------------------------


def test_psnr_of_known_mse():
    a = np.full((8, 10, 3), 100, np.uint8)
    b = a.copy()
    b[:, :, 0] += 6  # one channel of three off by 6: MSE = 36 / 3 = 12
    assert metrics.mse(a, b) == pytest.approx(12.0)
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 12.0))
    assert metrics.psnr(a, a) == math.inf
    deep = np.full((4, 4), 1000, np.uint16)
    assert metrics.psnr(deep, deep + 1) == pytest.approx(20 * math.log10(65535))
    with pytest.raises(InvalidFrameError, match="shape"):
        metrics.psnr(a, a[:4])


def _noisy(img: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8)


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    img = synthetic_rgb(176, 192, seed=3)
    assert metrics.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    values = [metrics.ms_ssim(img, _noisy(img, s)) for s in (1, 3, 8, 20, 50)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert 0.9 < values[0] < 1.0 and values[-1] < 0.8
    assert metrics.ms_ssim(img[:, :, 1], _noisy(img, 8)[:, :, 1]) < 1.0
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0)
    with pytest.raises(InvalidFrameError, match="161"):
        metrics.ms_ssim(img[:100], img[:100])


def test_ms_ssim_matches_an_independent_torch_implementation():
    """pytorch_msssim's algorithm written with torch convolutions (float64)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    img = synthetic_rgb(176, 192, seed=4)  # every scale has even sides
    dec = _noisy(img, 6)

    def reference(x, y):
        x = torch.tensor(x, dtype=torch.float64).permute(2, 0, 1)[None]
        y = torch.tensor(y, dtype=torch.float64).permute(2, 0, 1)[None]
        g = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
        g = (g / g.sum()).view(1, 1, 1, 11).repeat(3, 1, 1, 1)

        def blur(t):
            return F.conv2d(F.conv2d(t, g, groups=3), g.transpose(2, 3), groups=3)

        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        w = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333], dtype=torch.float64)
        terms = []
        for level in range(5):
            mx, my = blur(x), blur(y)
            cs = (2 * (blur(x * y) - mx * my) + c2) / (
                blur(x * x) - mx * mx + blur(y * y) - my * my + c2)
            ssim_map = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
            if level < 4:
                terms.append(torch.relu(cs.mean((2, 3))))
                x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        terms.append(torch.relu(ssim_map.mean((2, 3))))
        return float(torch.prod(torch.stack(terms) ** w.view(-1, 1, 1), 0).mean())

    assert metrics.ms_ssim(img, dec) == pytest.approx(reference(img, dec), abs=1e-10)


def test_camera_metrics_record():
    img = synthetic_rgb(170, 180, seed=2)
    a, b = CameraFrame(img), CameraFrame(_noisy(img, 4))
    m = metrics.camera_metrics(a, b, payload_bytes=170 * 180 // 8)
    assert m["bpp"] == pytest.approx(1.0)
    assert m["psnr"] == pytest.approx(metrics.psnr(img, b.pixels))
    assert 0.95 < m["ms_ssim"] < 1.0 and m["exact"] is False
    small = metrics.camera_metrics(CameraFrame(img[:40, :40].copy()),
                                   CameraFrame(img[:40, :40].copy()), 100)
    assert small["ms_ssim"] is None and small["exact"] is True and small["psnr"] == math.inf


# --- point-cloud metrics -------------------------------------------------------------


def _grid_points(n: int = 6, spacing: float = 1.0) -> np.ndarray:
    axis = np.arange(n) * spacing
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def test_chamfer_and_d1_psnr_of_a_known_shift():
    pts = _grid_points()  # 1 m lattice: every point's nearest neighbour is its shifted self
    shifted = pts + np.array([0.1, 0.0, 0.0])
    g = metrics.geometry_distances(pts, shifted)
    assert g["chamfer"] == pytest.approx(0.1)
    assert g["d1_mse"] == pytest.approx(0.01)
    diagonal = math.sqrt(3) * 5.0
    assert g["d1_peak"] == pytest.approx(diagonal)
    assert g["d1_psnr"] == pytest.approx(10 * math.log10(3 * diagonal ** 2 / 0.01))
    fixed = metrics.geometry_distances(pts, shifted, peak=1.0)
    assert fixed["d1_psnr"] == pytest.approx(10 * math.log10(300.0))
    same = metrics.geometry_distances(pts, pts)
    assert same["chamfer"] == 0.0 and same["d1_psnr"] == math.inf


def test_d1_takes_the_worse_direction():
    a = _grid_points(4)
    b = np.concatenate([a, [[100.0, 0.0, 0.0]]])  # one outlier only b has
    g = metrics.geometry_distances(a, b, peak=1.0)
    # a -> b: all zero; b -> a: one point 97 m from (3, 0, 0) among 65.
    assert g["d1_mse"] == pytest.approx(97.0 ** 2 / 65)
    assert g["chamfer"] == pytest.approx(0.5 * 97.0 / 65)


def test_max_and_mean_error_of_known_offsets():
    pts = _grid_points(3)
    offsets = np.zeros_like(pts)
    offsets[:, 2] = np.linspace(0.0, 0.26, len(pts))  # 0 .. 0.26 m along z
    moved = pts + offsets
    moved[5] = np.nan  # lost in the decoder: excluded, counted
    e = metrics.correspondence_errors(pts, moved)
    keep = np.arange(len(pts)) != 5
    assert e["max_error"] == pytest.approx(0.26)
    assert e["mean_error"] == pytest.approx(offsets[keep, 2].mean())
    assert e["rms_error"] == pytest.approx(math.sqrt(np.mean(offsets[keep, 2] ** 2)))
    assert e["nan_mismatch"] == 1
    with pytest.raises(InvalidFrameError, match="order"):
        metrics.correspondence_errors(pts, pts[:-1])


def test_cloud_metrics_rate_and_field_errors():
    frame = radar_frame(n=40, seed=5)
    decoded_points = frame.points.copy()
    decoded_points["rcs"] += 0.05
    decoded_points["x"] -= 0.02
    decoded = PointCloudFrame(decoded_points, Modality.RADAR)
    m = metrics.cloud_metrics(frame, decoded, payload_bytes=400)
    assert m["bits_per_point"] == pytest.approx(80.0)
    assert m["field_max_error"]["rcs"] == pytest.approx(0.05, abs=1e-5)
    assert m["field_max_error"]["x"] == pytest.approx(0.02, abs=1e-5)
    assert m["field_max_error"]["track_id"] == 0.0
    assert m["max_error"] == pytest.approx(0.02, abs=1e-5) and m["exact"] is False


# --- BD-rate --------------------------------------------------------------------------

RATES = [0.30, 0.55, 0.93, 1.52]
PSNRS = [30.7, 34.0, 37.4, 40.6]


def test_bd_rate_of_scaled_rates_and_of_itself():
    assert bdrate.bd_rate(RATES, PSNRS, [r * 0.8 for r in RATES], PSNRS) == pytest.approx(
        -20.0, abs=0.5)
    assert bdrate.bd_rate(RATES, PSNRS, [r * 1.25 for r in RATES], PSNRS) == pytest.approx(
        25.0, abs=0.5)
    assert bdrate.bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)
    assert bdrate.bd_psnr(RATES, PSNRS, RATES, [q + 0.5 for q in PSNRS]) == pytest.approx(0.5)
    # Order of the points does not matter.
    assert bdrate.bd_rate(RATES[::-1], PSNRS[::-1], [r * 0.8 for r in RATES], PSNRS) == \
        pytest.approx(-20.0, abs=0.5)


def test_bd_rate_matches_the_sampled_pchip_reference():
    """The common Python implementation: pchip on 100 samples, trapezoid rule."""
    from scipy.interpolate import pchip_interpolate
    test_rates, test_psnr = [0.25, 0.50, 0.90, 1.60], [30.9, 34.3, 37.6, 40.9]
    lo, hi = max(PSNRS[0], test_psnr[0]), min(PSNRS[-1], test_psnr[-1])
    s = np.linspace(lo, hi, 100)
    area = (np.trapezoid(pchip_interpolate(test_psnr, np.log(test_rates), s), s)
            - np.trapezoid(pchip_interpolate(PSNRS, np.log(RATES), s), s))
    expected = (math.exp(area / (hi - lo)) - 1) * 100
    assert bdrate.bd_rate(RATES, PSNRS, test_rates, test_psnr) == pytest.approx(expected, abs=0.01)


def test_bd_rate_refuses_curves_it_cannot_compare():
    with pytest.raises(ConfigError, match="overlap"):
        bdrate.bd_rate(RATES, PSNRS, RATES, [q + 20 for q in PSNRS])
    with pytest.raises(ConfigError, match="finite"):
        bdrate.bd_rate(RATES, PSNRS, RATES, PSNRS[:3] + [math.inf])
    with pytest.raises(ConfigError, match="at least 2"):
        bdrate.bd_rate(RATES, PSNRS, [1.0], [35.0])
    with pytest.raises(ConfigError, match="positive"):
        bdrate.bd_rate(RATES, PSNRS, [0.0, 1, 2, 3], PSNRS)


def test_rate_at_quality_interpolates_log_rate():
    assert bdrate.rate_at_quality(RATES, PSNRS, 34.0) == pytest.approx(0.55)
    mid = bdrate.rate_at_quality(RATES, PSNRS, 35.0)
    assert 0.55 < mid < 0.93
    assert bdrate.rate_at_quality(RATES, PSNRS, 45.0) is None
    # A straight line in log-rate is reproduced exactly between the points.
    line = [math.exp(0.1 * q) for q in PSNRS]
    assert bdrate.rate_at_quality(line, PSNRS, 36.0) == pytest.approx(math.exp(3.6), rel=1e-9)


# --- x265 anchor codec ----------------------------------------------------------------


def test_x265_round_trip_quality_window_and_rate_order():
    frame = CameraFrame(synthetic_rgb(96, 128, seed=7), "rgb8", 123, "cam")
    sizes, psnrs = {}, {}
    for qp in (22, 32, 42):
        payload = encode(frame, "x265", qp=qp)
        out = decode(payload)
        assert out.encoding == "rgb8" and out.pixels.shape == (96, 128, 3)
        assert (out.stamp_ns, out.frame_id) == (123, "cam")
        sizes[qp], psnrs[qp] = len(payload), metrics.psnr(frame.pixels, out.pixels)
    assert 36.0 < psnrs[22] < 48.0, psnrs
    assert sizes[22] > sizes[32] > sizes[42], sizes
    assert psnrs[22] > psnrs[32] > psnrs[42], psnrs
    # Reproducible bytes for the same input and settings.
    assert encode(frame, "x265", qp=32) == encode(frame, "x265", qp=32)


def test_x265_odd_sizes_bgr_grey_and_crf():
    img = synthetic_rgb(37, 51, seed=8)
    rgb = decode(encode(CameraFrame(img), "x265", qp=20)).pixels
    bgr = decode(encode(CameraFrame(img[:, :, ::-1].copy(), "bgr8"), "x265", qp=20))
    assert bgr.encoding == "bgr8"
    np.testing.assert_array_equal(bgr.pixels[:, :, ::-1], rgb)  # same stream, channel order kept
    assert metrics.psnr(img, rgb) > 35.0
    grey = CameraFrame(img[:, :, 1].copy(), "mono8")
    out = decode(encode(grey, "x265", qp=20))
    assert out.encoding == "mono8" and out.pixels.shape == (37, 51)
    assert metrics.psnr(grey.pixels, out.pixels) > 35.0
    crf = decode(encode(CameraFrame(img), "x265", crf=30.0, preset="fast"))
    assert 25.0 < metrics.psnr(img, crf.pixels) < 50.0


def test_x265_pads_tiny_images_and_crops_back():
    for h, w in ((1, 1), (3, 64), (15, 17)):
        img = synthetic_rgb(32, 64, seed=h)[:h, :w].copy()
        out = decode(encode(CameraFrame(img), "x265", qp=12))
        assert out.pixels.shape == (h, w, 3)
        assert np.abs(out.pixels.astype(int) - img).max() <= 12, (h, w)


def test_x265_refuses_a_stream_larger_than_its_metadata():
    codec = get_codec("x265")
    c = unpack(codec.encode(CameraFrame(synthetic_rgb(400, 600))))
    c.metadata["height"] = c.metadata["width"] = 20
    with pytest.raises(WireFormatError, match="20x20"):
        codec.decode(c)


def test_x265_refusals():
    with pytest.raises(InvalidFrameError, match="png"):
        encode(CameraFrame(np.zeros((8, 8, 4), np.uint8), "rgba8"), "x265")
    with pytest.raises(ConfigError, match="qp"):
        get_codec("x265", qp=52)
    with pytest.raises(ConfigError, match="preset"):
        get_codec("x265", preset="warp")
    codec = get_codec("x265")
    c = unpack(codec.encode(CameraFrame(synthetic_rgb(16, 16))))
    c.sections = [b"\x00\x00\x01" + bytes(40)]
    with pytest.raises(WireFormatError):
        codec.decode(c)
    c = unpack(codec.encode(CameraFrame(synthetic_rgb(16, 16))))
    c.metadata["width"] = 17  # stream and metadata disagree
    with pytest.raises(WireFormatError, match="metadata"):
        codec.decode(c)


# --- runner ---------------------------------------------------------------------------


def test_parse_codec_spec_product_and_types():
    settings = runner.parse_codec_spec("avif:quality=30,60:speed=8,10")
    assert [s.label for s in settings] == ["quality=30,speed=8", "quality=30,speed=10",
                                           "quality=60,speed=8", "quality=60,speed=10"]
    assert settings[0].settings == (("quality", 30), ("speed", 8))
    grid = runner.parse_codec_spec("grid:max_error=0.01,0.02")
    assert [dict(s.settings)["max_error"] for s in grid] == [0.01, 0.02]
    assert runner.parse_codec_spec("png")[0].label == "default"
    for bad, match in (("jpeg:qualty=5", "no setting"), ("jpeg:quality=abc", "not a valid"),
                       ("jpeg:quality", "KEY=V1"), ("x265:qp=60", "maximum"), (":q=1", "name")):
        with pytest.raises(ConfigError, match=match):
            runner.parse_codec_spec(bad)


def test_run_benchmark_on_clouds_and_summary():
    frames = [runner.BenchFrame(lidar_frame(seed=s), f"scan{s}") for s in range(2)]
    frames.append(runner.BenchFrame(radar_frame(seed=3), "radar0"))
    settings = runner.parse_codec_specs(["grid:max_error=0.01,0.05", "zstd"])
    result = runner.run_benchmark(iter(frames), settings)
    # zstd handles all three frames losslessly.
    zstd = [r for r in result.records if r["codec"] == "zstd"]
    assert len(zstd) == 3 and all(r["exact"] and r["max_error"] == 0.0 for r in zstd)
    rows = {(r["codec"], r["setting"], r["modality"]): r
            for r in runner.summarise([r for r in result.records if r["modality"] == "lidar"])}
    for e in (0.01, 0.05):
        row = rows[("grid", f"max_error={e}", "lidar")]
        assert row["frames"] == 2 and 0 < row["max_error"] <= e
        assert row["points"] == 2 * 16 * 64
        recs = [r for r in result.records if r["codec"] == "grid" and r["modality"] == "lidar"
                and r["setting"] == f"max_error={e}"]
        assert row["bits_per_point"] == pytest.approx(
            8 * sum(r["bytes"] for r in recs) / row["points"])
    assert (rows[("grid", "max_error=0.05", "lidar")]["bits_per_point"]
            < rows[("grid", "max_error=0.01", "lidar")]["bits_per_point"])


def test_a_codec_for_several_modalities_gets_a_summary_row_each():
    frames = [runner.BenchFrame(lidar_frame(seed=1), "l"), runner.BenchFrame(radar_frame(), "r")]
    result = runner.run_benchmark(frames, runner.parse_codec_specs(["zstd"]))
    rows = {r["modality"]: r for r in result.summary()}
    assert set(rows) == {"lidar", "radar"}
    assert rows["lidar"]["points"] == 16 * 64 and rows["radar"]["points"] == 60
    assert rows["radar"]["field_max_error"]["track_id"] == 0.0


def test_compare_codecs_reports_what_it_cannot_compute():
    def row(codec, bpp, psnr, modality="camera"):
        return {"codec": codec, "modality": modality, "bpp": bpp, "psnr": psnr,
                "ms_ssim_db": None}
    summary = ([row("jpeg", r, q) for r, q in zip(RATES, PSNRS)]
               + [row("fast", r * 0.8, q) for r, q in zip(RATES, PSNRS)]
               + [row("png", 12.0, math.inf)]
               + [row("far", r * 10, q) for r, q in zip(RATES, PSNRS)]
               + [{"codec": "grid", "modality": "lidar", "bits_per_point": 10.0,
                   "d1_psnr": 90.0}])
    fast = bdrate.compare_codecs(summary, "jpeg", "fast")
    assert [r["quality"] for r in fast] == ["psnr", "ms_ssim_db"]
    assert fast[0]["bd_rate_percent"] == pytest.approx(-20.0, abs=0.5)
    assert fast[0]["bd_quality"] > 0 and "bd_rate_error" in fast[1]
    lossless = bdrate.compare_codecs(summary, "jpeg", "png")[0]
    assert "png has 0 point(s)" in lossless["bd_rate_error"]
    far = bdrate.compare_codecs(summary, "jpeg", "far")[0]  # same PSNRs at 10x the rate
    assert far["bd_rate_percent"] == pytest.approx(900.0, rel=1e-6)
    assert "overlap in rate" in far["bd_quality_error"]
    assert bdrate.compare_codecs(summary, "jpeg", "grid") == []  # no shared modality


def test_synthetic_source_yields_matched_frames():
    frames = list(runner.synthetic_frames(2, seed=1, camera_size=(64, 48), lidar_beams=8,
                                          lidar_columns=128))
    assert [f.frame_key for f in frames] == ["camera#0", "lidar#0", "radar#0",
                                             "camera#1", "lidar#1", "radar#1"]
    assert frames[0].frame.pixels.shape == (48, 64, 3)
    assert [f.frame.modality for f in frames[:3]] == [Modality.CAMERA, Modality.LIDAR,
                                                      Modality.RADAR]
    result = runner.run_benchmark(frames, runner.parse_codec_specs(["grid:max_error=0.02"]))
    assert len(result.records) == 2 and all(r["max_error"] <= 0.02 for r in result.records)
    assert {s["modality"] for s in result.skipped} == {"camera", "radar"}


def test_run_benchmark_skips_frames_a_codec_refuses():
    rgba = CameraFrame(np.zeros((8, 8, 4), np.uint8), "rgba8")
    result = runner.run_benchmark([runner.BenchFrame(rgba, "a")],
                                  runner.parse_codec_specs(["x265:qp=30", "png"]))
    assert [r["codec"] for r in result.records] == ["png"]
    assert result.skipped[0]["codec"] == "x265" and "rgba8" in result.skipped[0]["reason"]


def test_bag_source_reads_images_and_clouds(tmp_path):
    from sensor_codec.bag.io import write_frames
    from sensor_codec.messages import frame_to_image, frame_to_pointcloud2, rosbags_types
    types = rosbags_types()
    items = []
    for i in range(3):
        items.append(("/cam", 10 + i, frame_to_image(CameraFrame(synthetic_rgb(24, 32, i)), types)))
        items.append(("/lidar", 10 + i, frame_to_pointcloud2(lidar_frame(seed=i), types)))
    write_frames(tmp_path / "bag", items)
    got = list(runner.bag_frames(tmp_path / "bag", limit=2))
    assert sorted(f.frame_key for f in got) == ["/cam#0", "/cam#1", "/lidar#0", "/lidar#1"]
    cam = next(f.frame for f in got if f.frame_key == "/cam#1")
    np.testing.assert_array_equal(cam.pixels, synthetic_rgb(24, 32, 1))


# --- CLI ------------------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        (folder / f"frame{i}.png").write_bytes(
            imagecodecs.png_encode(synthetic_rgb(168, 176, seed=10 + i)))
    return folder


def test_bench_cli_writes_results_and_plots(image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", "--source", "images", str(image_folder), "--codecs",
               "jpeg:quality=30,60,90", "x265:qp=37,45", "png", "--out", str(out),
               "--bd-rate", "jpeg", "x265"])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["frames"] == 3 and len(doc["records"]) == 3 * 6
    got = {(r["codec"], r["setting"]) for r in doc["summary"]}
    assert got == {("jpeg", "quality=30"), ("jpeg", "quality=60"), ("jpeg", "quality=90"),
                   ("x265", "qp=37"), ("x265", "qp=45"), ("png", "default")}
    png = next(r for r in doc["summary"] if r["codec"] == "png")
    assert png["exact"] is True and png["psnr"] is None  # inf is not JSON
    jpeg = sorted((r for r in doc["summary"] if r["codec"] == "jpeg"), key=lambda r: r["bpp"])
    assert [r["setting"] for r in jpeg] == ["quality=30", "quality=60", "quality=90"]
    assert jpeg[0]["psnr"] < jpeg[1]["psnr"] < jpeg[2]["psnr"]
    assert all(0.5 < r["ms_ssim"] < 1.0 for r in jpeg)
    bd = [r for r in doc["bd_rates"] if r["quality"] == "psnr"]
    assert len(bd) == 1 and bd[0]["test"] == "x265" and bd[0]["bd_rate_percent"] < 0
    assert "psnr_vs_bpp.png" in doc["plots"] and "ms_ssim_vs_bpp.png" in doc["plots"]
    assert (out / "psnr_vs_bpp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "x265" in printed and "BD-rate" in printed


def test_bench_cli_json_and_errors(image_folder, tmp_path, capsys):
    rc = main(["bench", "--source", "images", str(image_folder), "--limit", "1", "--codecs",
               "webp:quality=50", "--out", str(tmp_path / "o"), "--json", "--no-plots"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"][0]["frames"] == 1 and doc["summary"][0]["codec"] == "webp"
    assert not list((tmp_path / "o").glob("*.png"))
    assert main(["bench", "--source", "images", str(image_folder), "--codecs", "nope",
                 "--out", str(tmp_path / "o")]) == 2
    assert main(["bench", "--source", "images", str(image_folder), "--codecs", "png",
                 "--bd-rate", "png", "jpeg", "--out", str(tmp_path / "o")]) == 2
    assert main(["bench", "--source", "images", str(tmp_path / "missing"), "--codecs", "png",
                 "--out", str(tmp_path / "o")]) == 2
    assert "does not run" in capsys.readouterr().err


# --- real data ------------------------------------------------------------------------


def test_x265_and_metrics_on_a_camvid_frame(shared_data):
    path = sorted((shared_data / "camvid" / "val").glob("*.png"))[0]
    frame = runner.read_image(path)
    assert frame.pixels.shape == (360, 480, 3)
    m = runner.measure(get_codec("x265", qp=32), frame)
    assert 31.0 < m["psnr"] < 37.0 and 0.3 < m["bpp"] < 1.0, m
    assert 0.95 < m["ms_ssim"] < 1.0


# --- segmentation metrics and the runner's extra_metrics hook ------------------------


def test_confusion_matrix_and_iou_against_hand_counts():
    truth = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])  # 3 = void for 3 classes
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
    conf = metrics.confusion_matrix(pred, truth, num_classes=3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # void pixels not counted
    miou, iou = metrics.iou_from_confusion(conf)
    # IoU = TP / (TP + FP + FN): class 0: 1/(1+1+1), class 1: 2/(2+1+0), class 2: 1/(1+0+1).
    assert iou.tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    same = metrics.segmentation_metrics(truth.clip(0, 2), truth.clip(0, 2), 3)
    assert same["frame_miou"] == 1.0
    # A class in neither map is left out of the mean, not counted as 0.
    assert metrics.iou_from_confusion(np.diag([4, 0, 2]))[0] == 1.0
    assert math.isnan(metrics.iou_from_confusion(np.zeros((3, 3)))[0])
    with pytest.raises(InvalidFrameError, match="shape"):
        metrics.confusion_matrix(pred[:, :2], truth, 3)
    with pytest.raises(InvalidFrameError, match="0..2"):
        metrics.confusion_matrix(pred + 1, truth, 3)


def test_extra_metrics_hook_and_miou_of_the_summed_confusion():
    frames = [runner.BenchFrame(camera_frame_of(synthetic_rgb(48, 64, seed=s)), f"f{s}",
                                labels=np.full((48, 64), s, np.uint8)) for s in range(2)]
    calls = []

    def class_zero_everywhere(item, decoded):  # a segmenter that always answers class 0
        calls.append((item.frame_key, decoded.pixels.shape))
        return metrics.segmentation_metrics(np.zeros((48, 64), np.uint8), item.labels, 2)

    result = runner.run_benchmark(frames, runner.parse_codec_specs(["png"]),
                                  extra_metrics=class_zero_everywhere)
    assert calls == [("f0", (48, 64, 3)), ("f1", (48, 64, 3))]
    assert [r["frame_miou"] for r in result.records] == [1.0, 0.0]
    (row,) = result.summary()
    # Summed confusion: class 0 has TP 3072, FP 3072 -> 0.5; class 1 has FN only -> 0.
    # The mean of the per-frame mIoUs would be 0.5: the summary must not average them.
    assert row["class_iou"] == [0.5, 0.0] and row["miou"] == 0.25


def camera_frame_of(rgb: np.ndarray) -> CameraFrame:
    return CameraFrame(rgb, "rgb8", 0, "cam")


def test_camvid_frames_attach_label_maps(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "valannot").mkdir()
    for i in range(2):
        (tmp_path / "val" / f"f{i}.png").write_bytes(
            imagecodecs.png_encode(synthetic_rgb(24, 32, seed=i)))
        (tmp_path / "valannot" / f"f{i}.png").write_bytes(
            imagecodecs.png_encode(np.full((24, 32), 3 + i, np.uint8)))
    items = list(runner.camvid_frames(tmp_path, "val", limit=5, labels=True))
    assert [i.frame_key for i in items] == ["f0.png", "f1.png"]
    assert [int(i.labels.mean()) for i in items] == [3, 4] and items[0].labels.shape == (24, 32)
    assert all(i.labels is None for i in runner.camvid_frames(tmp_path, "val"))
    (tmp_path / "valannot" / "f1.png").unlink()
    with pytest.raises(ConfigError, match="f1.png"):
        list(runner.camvid_frames(tmp_path, "val", labels=True))
    (tmp_path / "test").mkdir()
    with pytest.raises(ConfigError, match="testannot"):
        runner.camvid_frames(tmp_path, "test", labels=True)


def test_quality_overlap_fractions():
    ov = bdrate.quality_overlap([30, 34, 40], [25, 28, 35])
    assert (ov["low"], ov["high"]) == (30.0, 35.0)
    assert ov["anchor_fraction"] == pytest.approx(0.5) and ov["test_fraction"] == pytest.approx(0.5)
    apart = bdrate.quality_overlap([30, 40], [20, 25])
    assert apart["anchor_fraction"] == 0.0 and apart["test_fraction"] == 0.0
    with pytest.raises(ConfigError, match="2\\+"):
        bdrate.quality_overlap([30], [20, 25])


def test_format_table_extra_columns():
    from sensor_codec.bench.cli import format_table

    row = {"codec": "jpeg", "setting": "quality=50", "frames": 2, "modality": "camera",
           "bpp": 0.5, "psnr": 30.0, "miou": 0.61234}
    header, line = format_table([row], (("miou", 3),)).splitlines()[1:3]
    assert header.split()[-1] == "miou" and line.split()[-1] == "0.612"
