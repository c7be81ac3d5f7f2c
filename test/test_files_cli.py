"""``sensor-codec compress | decompress | codecs`` on real files, through ``main(argv)``."""

from __future__ import annotations

import struct

import imagecodecs
import numpy as np
import pytest

from sensor_codec.cli import main
from sensor_codec.codecs import codec_class, codec_names
from sensor_codec.frames import PointCloudFrame
from sensor_codec.io import files
from sensor_codec.wire import unpack


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _kitti_bin(path, n=500, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    table = np.column_stack([rng.uniform(-40, 40, (n, 3)),
                             np.round(rng.uniform(0, 1, n), 2)]).astype("<f4")
    table.tofile(path)
    return table


# --- images ----------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["rgb8", "rgba8", "mono8", "mono16"])
def test_png_file_round_trip_is_exact_with_png(tmp_path, capsys, make_camera, encoding):
    frame = make_camera(encoding)
    src = tmp_path / "in.png"
    src.write_bytes(imagecodecs.png_encode(frame.pixels))
    rc, out, _ = _run(capsys, "compress", src, "-o", tmp_path / "c.scdc", "--codec", "png",
                      "--frame-id", "cam0", "--stamp-ns", 42)
    assert rc == 0 and f"camera 64x48 {encoding}, codec png" in out
    assert unpack((tmp_path / "c.scdc").read_bytes()).frame_id == "cam0"
    rc, out, _ = _run(capsys, "decompress", tmp_path / "c.scdc", "-o", tmp_path / "out.png")
    assert rc == 0 and "sensor_codec/camera/png; v1" in out
    np.testing.assert_array_equal(imagecodecs.imread(tmp_path / "out.png"), frame.pixels)


def test_jpeg_quality_flag_sets_the_rate(tmp_path, capsys, make_camera, image_psnr):
    frame = make_camera("rgb8", 96, 128)
    src = tmp_path / "in.png"
    src.write_bytes(imagecodecs.png_encode(frame.pixels))
    sizes = {}
    for q in (40, 95):
        out = tmp_path / f"q{q}.scdc"
        assert _run(capsys, "compress", src, "-o", out, "--codec", "jpeg", "--quality", q)[0] == 0
        assert unpack(out.read_bytes()).codec == "jpeg"
        sizes[q] = out.stat().st_size
        assert _run(capsys, "decompress", out, "-o", tmp_path / f"q{q}.npy")[0] == 0
    assert sizes[40] < sizes[95]
    decoded = np.load(tmp_path / "q95.npy")
    assert 30 < image_psnr(frame.pixels, decoded) < 40


def test_bgr_frames_are_written_as_rgb_files(tmp_path, make_camera):
    frame = make_camera("bgr8")
    files.write_frame(frame, tmp_path / "x.png")
    np.testing.assert_array_equal(imagecodecs.imread(tmp_path / "x.png"), frame.to_rgb8())


# --- point clouds -------------------------------------------------------------------

def test_kitti_bin_grid_round_trip_within_max_error(tmp_path, capsys):
    table = _kitti_bin(tmp_path / "scan.bin")
    rc, out, _ = _run(capsys, "compress", tmp_path / "scan.bin", "--max-error", 0.02)
    assert rc == 0 and "lidar 500 points [x,y,z,intensity], codec grid" in out
    payload = tmp_path / "scan.bin.scdc"  # default output name
    assert unpack(payload.read_bytes()).metadata["coding"][0][1] < 2 * 0.02
    for suffix in (".bin", ".pcd", ".npy"):
        assert _run(capsys, "decompress", payload, "-o", tmp_path / f"back{suffix}")[0] == 0
    back = files.read_frame(tmp_path / "back.bin")
    err = np.linalg.norm(back.xyz() - table[:, :3].astype(np.float64), axis=1)
    assert err.max() <= 0.02
    np.testing.assert_array_equal(back.points["intensity"], table[:, 3])
    for other in ("back.pcd", "back.npy"):
        again = files.read_frame(tmp_path / other)
        np.testing.assert_array_equal(again.xyz(), back.xyz())


def test_max_error_sets_each_codecs_own_bound_setting(tmp_path, capsys):
    table = _kitti_bin(tmp_path / "scan.bin")
    rc, _, _ = _run(capsys, "compress", tmp_path / "scan.bin", "-o", tmp_path / "r.scdc",
                    "--codec", "rangecode", "--max-error", 0.03)
    assert rc == 0
    assert unpack((tmp_path / "r.scdc").read_bytes()).metadata["bound"] == 0.03
    assert _run(capsys, "decompress", tmp_path / "r.scdc", "-o", tmp_path / "r.bin")[0] == 0
    err = np.linalg.norm(files.read_frame(tmp_path / "r.bin").xyz()
                         - table[:, :3].astype(np.float64), axis=1)
    assert 0.01 < err.max() <= 0.03  # the 3 cm bound is used, not the 1 cm default
    rc, _, err_text = _run(capsys, "compress", tmp_path / "scan.bin", "-o", tmp_path / "d.scdc",
                           "--codec", "draco", "--max-error", 0.03)
    assert rc == 2 and "codec 'draco' has no per-point error bound for --max-error" in err_text
    assert "'grid'" in err_text and "'rangecode'" in err_text


def test_nuscenes_pcd_bin_defaults_to_five_columns(tmp_path, capsys):
    rng = np.random.default_rng(1)
    table = np.column_stack([rng.uniform(-30, 30, (200, 3)), rng.integers(0, 255, 200),
                             rng.integers(0, 32, 200)]).astype("<f4")
    table.tofile(tmp_path / "LIDAR_TOP.pcd.bin")
    rc, out, _ = _run(capsys, "compress", tmp_path / "LIDAR_TOP.pcd.bin", "-o",
                      tmp_path / "n.scdc", "--codec", "zstd")
    assert rc == 0 and "[x,y,z,intensity,ring]" in out
    _run(capsys, "decompress", tmp_path / "n.scdc", "-o", tmp_path / "n.bin")
    np.testing.assert_array_equal(np.fromfile(tmp_path / "n.bin", "<f4").reshape(-1, 5), table)


def test_bin_with_wrong_columns_is_refused_with_a_hint(tmp_path, capsys):
    (tmp_path / "odd.bin").write_bytes(np.zeros(5 * 3, "<f4").tobytes())  # 60 bytes
    rc, _, err = _run(capsys, "compress", tmp_path / "odd.bin")
    assert rc == 2 and "not a whole number of 4-column" in err and "--fields" in err
    rc, out, _ = _run(capsys, "compress", tmp_path / "odd.bin", "--fields", "x,y,z",
                      "--codec", "zstd")
    assert rc == 0 and "lidar 5 points [x,y,z]" in out


def _pcd_header(fields, sizes, types, counts, n, data, height=1) -> bytes:
    return ("# .PCD v0.7\nVERSION 0.7\n"
            f"FIELDS {' '.join(fields)}\nSIZE {' '.join(map(str, sizes))}\n"
            f"TYPE {' '.join(types)}\nCOUNT {' '.join(map(str, counts))}\n"
            f"WIDTH {n // height}\nHEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
            f"DATA {data}\n").encode()


def _pcd_records(n=24, seed=2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                ("intensity", "<u1"), ("ring", "<u2")])
    for axis in "xyz":
        points[axis] = rng.uniform(-5, 5, n)
    points["x"][3] = np.nan
    points["intensity"] = rng.integers(0, 256, n)
    points["ring"] = np.arange(n) % 4
    return points


@pytest.mark.parametrize("data", ["ascii", "binary", "binary_compressed"])
def test_pcd_inputs_of_every_data_kind_round_trip_losslessly(tmp_path, capsys, data):
    points = _pcd_records()
    head = _pcd_header(points.dtype.names, [4, 4, 4, 1, 2], "FFFUU", [1] * 5, len(points), data,
                       height=4)
    if data == "ascii":
        body = "\n".join(" ".join(repr(v.item()) if k < 3 else str(int(v))
                                  for k, v in enumerate(row)) for row in points).encode()
    elif data == "binary":
        body = points.tobytes()
    else:
        soa = b"".join(np.ascontiguousarray(points[name]).tobytes() for name in points.dtype.names)
        packed = imagecodecs.lzf_encode(soa)
        body = struct.pack("<II", len(packed), len(soa)) + packed
    (tmp_path / "in.pcd").write_bytes(head + body)
    rc, out, _ = _run(capsys, "compress", tmp_path / "in.pcd", "-o", tmp_path / "c.scdc",
                      "--codec", "zstd")
    assert rc == 0 and "lidar 24 points (4x6) [x,y,z,intensity,ring]" in out
    assert _run(capsys, "decompress", tmp_path / "c.scdc", "-o", tmp_path / "out.npy")[0] == 0
    back = np.load(tmp_path / "out.npy")
    for name in points.dtype.names:
        np.testing.assert_array_equal(back[name], points[name])


def test_pcd_writer_and_reader_agree_with_padding_and_ascii(tmp_path):
    points = _pcd_records()
    padded = np.dtype({"names": list(points.dtype.names),
                       "formats": [points.dtype.fields[n][0] for n in points.dtype.names],
                       "offsets": [0, 4, 8, 16, 18], "itemsize": 24})
    records = np.zeros(len(points), dtype=padded)
    for name in points.dtype.names:
        records[name] = points[name]
    frame = PointCloudFrame(records, "radar", height=4)
    for kind in ("ascii", "binary"):
        files.write_frame(frame, tmp_path / f"{kind}.pcd", pcd_data=kind)
        back = files.read_frame(tmp_path / f"{kind}.pcd", "radar")
        assert (back.height, back.width, back.modality.label) == (4, 6, "radar")
        for name in points.dtype.names:
            np.testing.assert_array_equal(back.points[name], points[name])
            assert back.points[name].dtype == points[name].dtype


def test_npy_table_needs_field_names_beyond_four_columns(tmp_path, capsys):
    np.save(tmp_path / "t.npy", np.arange(30, dtype=np.float32).reshape(6, 5))
    rc, _, err = _run(capsys, "compress", tmp_path / "t.npy")
    assert rc == 2 and "5 columns; name them with --fields" in err
    rc, out, _ = _run(capsys, "compress", tmp_path / "t.npy", "--fields", "x,y,z,rcs,v_r",
                      "--modality", "radar")
    assert rc == 0 and "radar 6 points [x,y,z,rcs,v_r], codec radar_quant" in out
    back = files.read_frame(tmp_path / "t.npy", "radar", fields=("x", "y", "z", "rcs", "v_r"))
    assert back.points["v_r"][-1] == 29.0


# --- errors and listings ---------------------------------------------------------------

def test_cli_errors_exit_2_with_a_message(tmp_path, capsys):
    _kitti_bin(tmp_path / "s.bin")
    rc, _, err = _run(capsys, "compress", tmp_path / "s.bin", "--codec", "draco", "--quality", 5)
    assert rc == 2 and "codec 'draco' has no 'quality' setting" in err
    rc, _, err = _run(capsys, "compress", tmp_path / "s.bin", "--codec", "nope")
    assert rc == 2 and "no codec named 'nope'" in err
    rc, _, err = _run(capsys, "compress", tmp_path / "s.bin", "--set", "max_error=big")
    assert rc == 2 and "'max_error' takes a float, got 'big'" in err
    rc, _, err = _run(capsys, "compress", tmp_path / "s.bin", "--max-error", 500)
    assert rc == 2 and "above the maximum" in err
    rc, _, err = _run(capsys, "compress", tmp_path / "missing.bin")
    assert rc == 2 and "cannot read" in err
    assert _run(capsys, "compress", tmp_path / "s.bin", "-o", tmp_path / "s.scdc")[0] == 0
    rc, _, err = _run(capsys, "compress", tmp_path / "s.bin", "-o", tmp_path / "s.scdc")
    assert rc == 2 and "exists; pass --force" in err
    assert _run(capsys, "compress", tmp_path / "s.bin", "-o", tmp_path / "s.scdc", "-f")[0] == 0
    rc, _, err = _run(capsys, "decompress", tmp_path / "s.scdc", "-o", tmp_path / "s.png")
    assert rc == 2 and "not '.png'" in err
    (tmp_path / "junk.scdc").write_bytes(b"GIF89a" + bytes(40))
    rc, _, err = _run(capsys, "decompress", tmp_path / "junk.scdc", "-o", tmp_path / "j.npy")
    assert rc == 2 and "not a sensor_codec payload" in err


def test_set_parses_typed_values(tmp_path, capsys):
    _kitti_bin(tmp_path / "s.bin")
    rc, _, _ = _run(capsys, "compress", tmp_path / "s.bin", "-o", tmp_path / "d.scdc",
                    "--codec", "draco", "--set", "quantization_bits=9",
                    "--set", "compression_level=3")
    assert rc == 0
    meta = unpack((tmp_path / "d.scdc").read_bytes())
    assert meta.codec == "draco"
    # 9 bits over an 80 m extent: a coarse, visible quantisation.
    back = files.read_frame(tmp_path / "s.bin")
    assert _run(capsys, "decompress", tmp_path / "d.scdc", "-o", tmp_path / "d.npy")[0] == 0
    err = np.abs(np.load(tmp_path / "d.npy")["x"] - back.points["x"]).max()
    assert 0.02 < err <= 80 / (2 ** 9 - 1) / 2 * 1.01


def test_codecs_lists_every_codec_with_its_settings(capsys):
    rc, out, _ = _run(capsys, "codecs")
    assert rc == 0
    for name in codec_names():
        assert f"\n{name} " in "\n" + out
        for param in codec_class(name).params:
            assert f"    {param.name} ({param.type.__name__}, default {param.default!r}" in out
    rc, out, _ = _run(capsys, "codecs", "--modality", "radar")
    assert "radar_quant" in out and "jpeg" not in out


# --- real data ---------------------------------------------------------------------------

def test_real_kitti_scan_compresses_within_bound(tmp_path, capsys, shared_data):
    src = shared_data / "samples" / "kitti_000000" / "velodyne.bin"
    rc, out, _ = _run(capsys, "compress", src, "-o", tmp_path / "k.scdc", "--max-error", 0.01)
    assert rc == 0 and "lidar 115384 points" in out
    assert _run(capsys, "decompress", tmp_path / "k.scdc", "-o", tmp_path / "k.bin")[0] == 0
    original = np.fromfile(src, "<f4").reshape(-1, 4)
    back = np.fromfile(tmp_path / "k.bin", "<f4").reshape(-1, 4)
    err = np.linalg.norm(back[:, :3].astype(np.float64) - original[:, :3], axis=1)
    assert err.max() <= 0.01
    np.testing.assert_array_equal(back[:, 3], original[:, 3])
    ratio = src.stat().st_size / (tmp_path / "k.scdc").stat().st_size
    assert ratio > 6  # measured 7.5 (about 17 bits per point)
