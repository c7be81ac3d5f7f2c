"""The container format and every decoder against stored, broken and hostile payloads.

Golden payloads in ``test/golden`` (made by ``test/golden/make_golden.py``)
fail loudly on an accidental format change: they must keep decoding to the
stored arrays, and the same inputs must keep encoding to the same bytes.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor_codec.codecs import codec_names, decode, encode, get_codec
from sensor_codec.errors import (BadMagicError, ChecksumMismatchError, OversizedPayloadError,
                                 SensorCodecError, TruncatedPayloadError, UnknownCodecError,
                                 UnknownModelError, UnsupportedVersionError, WireFormatError)
from sensor_codec.frames import CameraFrame, Modality
from sensor_codec.wire import (FORMAT_VERSION, MAX_IMAGE_PIXELS, MAX_POINTS, Container,
                               format_tag, peek_header, unpack)

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)
GOLDEN_CASES = sorted(make_golden.CASES)


def _golden(case: str) -> bytes:
    return (GOLDEN_DIR / f"{case}.scdc").read_bytes()


def _repack(c: Container) -> bytes:
    """Pack again: a valid checksum over whatever was changed."""
    return c.pack()


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


# --- golden payloads -----------------------------------------------------------------

@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_payload_decodes_to_the_stored_frame(case):
    frame, codec, _ = make_golden.golden_input(case)
    back = decode(_golden(case))
    expected = np.load(GOLDEN_DIR / f"{case}.npy", allow_pickle=False)
    actual = make_golden.frame_array(back)
    assert actual.dtype == expected.dtype
    if expected.dtype.names:
        for name in expected.dtype.names:  # NaN == NaN here
            np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    else:
        np.testing.assert_array_equal(actual, expected)
    assert (back.stamp_ns, back.frame_id, back.modality) == \
        (frame.stamp_ns, frame.frame_id, frame.modality)
    assert unpack(_golden(case)).codec == codec


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_same_input_still_encodes_to_the_golden_bytes(case):
    frame, codec, settings_ = make_golden.golden_input(case)
    assert encode(frame, codec, **settings_) == _golden(case), (
        f"{case}: the bitstream changed; if that is deliberate, bump the format version "
        "where old payloads no longer decode and rerun test/golden/make_golden.py")


# --- the container layout ----------------------------------------------------------------

def test_container_layout_is_pinned_byte_for_byte():
    c = Container(modality=Modality.RADAR, codec="ab", model_id="m", stamp_ns=-2,
                  frame_id="\u00e9", metadata={"z": 1, "a": [2]}, sections=[b"xyz", b""])
    payload = c.pack()
    body = (b"SCDC" + b"\x01\x00" + b"\x03" + b"\x00" + b"\xfe" + b"\xff" * 7
            + b"\x02ab" + b"\x01m" + b"\x02\x00\xc3\xa9"
            + b"\x0f\x00\x00\x00" + b'{"a":[2],"z":1}'
            + b"\x02\x00" + b"\x03\x00\x00\x00xyz" + b"\x00\x00\x00\x00")
    assert payload == _with_crc(body)
    back = unpack(payload)
    assert (back.modality, back.codec, back.model_id, back.stamp_ns, back.frame_id,
            back.metadata, back.sections, back.version) == \
        (Modality.RADAR, "ab", "m", -2, "\u00e9", {"z": 1, "a": [2]}, [b"xyz", b""], 1)
    assert back.tag == "sensor_codec/radar/ab; v1; model=m" == format_tag(Modality.RADAR, "ab", "m")


def test_peek_header_reads_who_made_a_payload_without_the_sections():
    payload = _golden("grid_lidar")
    head = peek_header(payload[:60])
    assert (head.version, head.modality, head.codec, head.model_id, head.frame_id) == \
        (FORMAT_VERSION, Modality.LIDAR, "grid", "classical", "golden_lidar")


# --- broken payloads ---------------------------------------------------------------------

def test_empty_payload_is_truncated():
    with pytest.raises(TruncatedPayloadError, match="empty"):
        unpack(b"")
    with pytest.raises(TruncatedPayloadError):
        decode(bytearray())


def test_every_truncation_is_a_wire_format_error():
    payload = _golden("radar_quant_radar")
    for end in range(len(payload)):
        with pytest.raises(WireFormatError):
            decode(payload[:end])


def test_single_bit_flips_are_caught():
    payload = _golden("png_camera_mono16")
    for i in range(len(payload)):
        expected = (BadMagicError if i < 4 else UnsupportedVersionError if i < 6
                    else ChecksumMismatchError)
        for bit in range(8):
            corrupted = bytearray(payload)
            corrupted[i] ^= 1 << bit
            with pytest.raises(expected):
                decode(bytes(corrupted))


def test_bad_magic_and_wrong_version_are_named():
    payload = _golden("zstd_lidar")
    with pytest.raises(BadMagicError, match=r"b'\\x89PNG'"):
        unpack(b"\x89PNG\r\n\x1a\n" + payload[8:])
    future = _with_crc(payload[:4] + struct.pack("<H", 7) + payload[6:-4])
    with pytest.raises(UnsupportedVersionError, match="version 7 .* versions \\[1\\]"):
        decode(future)


def test_trailing_bytes_and_bad_lengths_are_refused():
    c = unpack(_golden("zstd_lidar"))
    body = c.pack()[:-4]
    with pytest.raises(WireFormatError, match="unexpected bytes"):
        unpack(_with_crc(body + b"\x00"))
    # A section claiming more bytes than the payload holds.
    bad = bytearray(Container(c.modality, c.codec, c.model_id, sections=[b"abc"]).pack()[:-4])
    bad[-7:-3] = struct.pack("<I", 10_000)
    with pytest.raises(TruncatedPayloadError, match="section 0"):
        unpack(_with_crc(bytes(bad)))


def test_metadata_and_section_count_caps():
    c = Container(Modality.LIDAR, "zstd", "classical")
    body = bytearray(c.pack()[:-4])
    meta_at = 16 + 1 + 4 + 1 + 9 + 2  # after codec, model id and (empty) frame id
    body[meta_at:meta_at + 4] = struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(OversizedPayloadError, match="metadata claims"):
        unpack(_with_crc(bytes(body)))
    many = Container(Modality.LIDAR, "zstd", "classical", sections=[b""] * 300)
    with pytest.raises(OversizedPayloadError, match="300 sections"):
        many.pack()


def test_unknown_codec_and_wrong_model_are_typed_errors():
    c = unpack(_golden("grid_lidar"))
    c.codec = "grid_v9"
    with pytest.raises(UnknownCodecError, match="'grid_v9'"):
        decode(_repack(c))
    c = unpack(_golden("grid_lidar"))
    c.model_id = "grid-weights-abc123"
    with pytest.raises(UnknownModelError, match="'grid-weights-abc123'.*holds 'classical'"):
        decode(_repack(c))
    with pytest.raises(WireFormatError, match="made by codec 'grid'"):
        get_codec("draco").decode(_golden("grid_lidar"))


# --- hostile declared sizes (valid checksum) -------------------------------------------------

def _sample_frame(modality: Modality):
    if modality == Modality.CAMERA:
        # Big enough for every codec (x265 wants at least a coding unit).
        yy, xx = np.mgrid[0:48, 0:64]
        pixels = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)
        return CameraFrame(pixels, "rgb8", stamp_ns=11, frame_id="cam")
    case = "grid_lidar" if modality == Modality.LIDAR else "radar_quant_radar"
    return make_golden.golden_input(case)[0]


@functools.lru_cache(maxsize=None)
def _payload(name: str, modality: Modality) -> bytes:
    return encode(_sample_frame(modality), name)


CAMERA_CODECS = [(n, Modality.CAMERA) for n in codec_names(Modality.CAMERA)]
POINT_CODECS = [(n, m) for n in codec_names() for m in (Modality.LIDAR, Modality.RADAR)
                if m in get_codec(n).modalities]
_ids = lambda cases: [f"{n}-{m.label}" for n, m in cases]  # noqa: E731


@pytest.mark.parametrize("name,modality", CAMERA_CODECS, ids=_ids(CAMERA_CODECS))
def test_oversized_declared_image_is_refused_before_allocating(name, modality):
    c = unpack(_payload(name, modality))
    c.metadata.update(height=100_000, width=100_000)
    assert 100_000 ** 2 > MAX_IMAGE_PIXELS
    tracemalloc.start()
    try:
        with pytest.raises(OversizedPayloadError, match="100000x100000"):
            decode(_repack(c))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2 ** 20


def _skip_if_layout_in_section(name: str, c: Container) -> None:
    if "num_points" not in c.metadata:  # radar_ac: layout in its own section
        pytest.skip(f"{name} declares its cloud in its own section, not in the metadata; "
                    "its forged-size tests live in test/test_radar_learned.py")


@pytest.mark.parametrize("name,modality", POINT_CODECS, ids=_ids(POINT_CODECS))
def test_oversized_declared_cloud_is_refused_before_allocating(name, modality):
    c = unpack(_payload(name, modality))
    _skip_if_layout_in_section(name, c)
    n = MAX_POINTS + 1
    c.metadata.update(num_points=n, height=1, width=n)
    tracemalloc.start()
    try:
        with pytest.raises(OversizedPayloadError, match=f"{n} points"):
            decode(_repack(c))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2 ** 20


@pytest.mark.parametrize("name,modality", POINT_CODECS, ids=_ids(POINT_CODECS))
def test_huge_declared_point_records_are_refused_before_allocating(name, modality):
    # Under the point-count cap, but 4 KiB a point: 256 GiB of records.
    c = unpack(_payload(name, modality))
    _skip_if_layout_in_section(name, c)
    c.metadata.update(num_points=MAX_POINTS, height=1, width=MAX_POINTS, point_step=4096)
    with pytest.raises(OversizedPayloadError, match="decoded bytes"):
        decode(_repack(c))


# --- metadata that disagrees with the sections ---------------------------------------------

def _mutations(c: Container):
    """(description, container) pairs, each inconsistent in one way."""
    meta = c.metadata

    def changed(**updates):
        return Container(c.modality, c.codec, c.model_id, c.stamp_ns, c.frame_id,
                         {**meta, **updates}, list(c.sections))

    yield "a section dropped", Container(c.modality, c.codec, c.model_id, c.stamp_ns,
                                         c.frame_id, meta, c.sections[:-1])
    yield "a section added", Container(c.modality, c.codec, c.model_id, c.stamp_ns,
                                       c.frame_id, meta, [*c.sections, b"\x00" * 8])
    if "height" in meta and "num_points" not in meta:
        # Twice as tall: a learned codec pads to a block multiple, so one more
        # row can land in the same latent grid and decode legitimately.
        yield "image taller", changed(height=meta["height"] * 2)
        yield "encoding changed", changed(encoding="mono16" if meta["encoding"] != "mono16"
                                          else "rgb8")
        yield "unknown encoding", changed(encoding="yuv422")
    if "num_points" in meta:
        yield "more points", changed(num_points=meta["num_points"] + 1,
                                     width=meta["width"] + 1 if meta["height"] == 1
                                     else meta["width"])
        yield "grid mismatch", changed(height=meta["height"] + 1)
        yield "unknown field type", changed(fields=[[f[0], "<c8", *f[2:]]
                                                    for f in meta["fields"]])
    if "coding" in meta and meta["coding"]:
        entry = list(meta["coding"][0])
        yield "coding width", changed(coding=[[*entry[:3], 3, *entry[4:]], *meta["coding"][1:]])
        yield "coding name", changed(coding=[["other", *entry[1:]], *meta["coding"][1:]])
        yield "coding missing", changed(coding=meta["coding"][1:])
    for key in ("raw_bytes", "nonfinite_points"):
        if key in meta:
            yield f"{key} off by one", changed(**{key: meta[key] + 1})
            yield f"{key} a string", changed(**{key: "7"})


@pytest.mark.parametrize("name,modality", CAMERA_CODECS + POINT_CODECS,
                         ids=_ids(CAMERA_CODECS + POINT_CODECS))
def test_metadata_inconsistent_with_sections_is_a_wire_format_error(name, modality):
    c = unpack(_payload(name, modality))
    checked = 0
    for what, bad in _mutations(c):
        with pytest.raises(WireFormatError):
            decode(bad.pack())
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("name,modality", CAMERA_CODECS + POINT_CODECS,
                         ids=_ids(CAMERA_CODECS + POINT_CODECS))
def test_corrupted_streams_with_valid_checksum_fail_cleanly(name, modality):
    """Random damage to the compressed streams (CRC recomputed) either still
    decodes to a frame of the declared size or raises a library error."""
    payload = _payload(name, modality)
    rng = np.random.default_rng(sum(name.encode()))
    c = unpack(payload)
    original = decode(payload)
    for _ in range(40):
        sections = [bytearray(s) for s in c.sections]
        target = [i for i, s in enumerate(sections) if s]
        if not target:
            break
        section = sections[rng.choice(target)]
        for _ in range(rng.integers(1, 4)):
            section[rng.integers(len(section))] = rng.integers(256)
        damaged = Container(c.modality, c.codec, c.model_id, c.stamp_ns, c.frame_id,
                            c.metadata, [bytes(s) for s in sections]).pack()
        try:
            back = decode(damaged)
        except SensorCodecError:
            continue
        if isinstance(original, CameraFrame):
            assert back.pixels.shape == original.pixels.shape
        else:
            assert back.points.dtype == original.points.dtype
            assert back.num_points == original.num_points


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_wire_format_errors(data):
    for candidate in (data, b"SCDC\x01\x00" + data):
        with pytest.raises(WireFormatError):
            decode(candidate)


def test_metadata_must_be_a_json_object():
    c = Container(Modality.LIDAR, "zstd", "classical")
    body = c.pack()[:-4]
    meta_at = 16 + 1 + 4 + 1 + 9 + 2
    for text in (b"[1,2]", b"{bad"):
        patched = (body[:meta_at] + struct.pack("<I", len(text)) + text
                   + body[meta_at + 4:])
        with pytest.raises(WireFormatError, match="JSON"):
            unpack(_with_crc(patched))
    assert json.loads(b"{}") == unpack(c.pack()).metadata


@pytest.mark.parametrize("case,section", [("zstd_lidar", 0), ("zstd_camera_rgb8", 0),
                                          ("grid_lidar", 0), ("radar_quant_radar", 2),
                                          ("png_camera_rgba8", 1), ("draco", 1)])
def test_zstd_sections_declaring_a_larger_size_are_refused(case, section):
    # python-zstandard would allocate whatever a frame header declares.
    payload = _payload("draco", Modality.LIDAR) if case == "draco" else _golden(case)
    c = unpack(payload)
    c.sections[section] = zstandard.ZstdCompressor().compress(b"\0" * (1 << 20))
    with pytest.raises(WireFormatError, match="declares 1048576 bytes"):
        decode(c.pack())
