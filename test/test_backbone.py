"""Segmentation backbone: shapes, tap, training, resume, mIoU, data loading, shipped export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sensor_codec.errors import ConfigError  # noqa: E402
from sensor_codec.learned.backbone import (IGNORE_INDEX, NUM_CLASSES, TAP_CHANNELS, Backbone,  # noqa: E402
                                           BackboneExport, count_parameters)
from sensor_codec.learned.data import augment_batch, class_weights, load_folder  # noqa: E402
from sensor_codec.learned.train import (BackboneTrainConfig, confusion_matrix,  # noqa: E402
                                        iou_from_confusion, train_backbone)

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("height,width", [(96, 128), (100, 130), (360, 480)])
def test_output_and_tap_shapes(height, width):
    torch.manual_seed(0)
    model = Backbone().eval()
    with torch.no_grad():
        logits, tap = model(torch.rand(2, 3, height, width))
    assert logits.shape == (2, NUM_CLASSES, height, width)
    # The tap is the fused 1/8 feature map: ceil(H/8) x ceil(W/8), non-negative (after ReLU).
    assert tap.shape == (2, TAP_CHANNELS, -(-height // 8), -(-width // 8))
    assert float(tap.min()) >= 0.0
    assert 500_000 < count_parameters(model) < 1_500_000


def test_export_graph_returns_argmax_as_uint8():
    torch.manual_seed(1)
    model = Backbone().eval()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        semantic, tap = BackboneExport(model)(image)
        logits, tap_direct = model(image)
    assert semantic.dtype == torch.uint8 and semantic.shape == (1, 64, 96)
    assert torch.equal(semantic.long(), logits.argmax(1))
    assert torch.equal(tap, tap_direct)


def test_iou_from_known_confusion_matrices():
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    conf[0, 0], conf[0, 1] = 3, 1   # class 0: 3 right, 1 predicted as class 1
    conf[1, 1] = 2                  # class 1: 2 right (+1 false positive from class 0)
    miou, iou = iou_from_confusion(conf)
    assert iou[0] == pytest.approx(3 / 4)
    assert iou[1] == pytest.approx(2 / 3)
    assert np.isnan(iou[2:]).all()  # absent classes do not count
    assert miou == pytest.approx((3 / 4 + 2 / 3) / 2)
    perfect = np.diag(np.arange(1, NUM_CLASSES + 1))
    assert iou_from_confusion(perfect)[0] == pytest.approx(1.0)
    # A class present in the truth but never predicted scores 0 and pulls the mean down.
    missed = perfect.copy()
    missed[2, 2], missed[2, 3] = 0, 5
    miou_missed, iou_missed = iou_from_confusion(missed)
    assert iou_missed[2] == 0.0
    assert iou_missed[3] == pytest.approx(4 / 9)
    assert miou_missed == pytest.approx((NUM_CLASSES - 2 + 4 / 9) / NUM_CLASSES)


def test_confusion_matrix_ignores_void():
    target = torch.tensor([[0, 1, IGNORE_INDEX], [2, 2, 255]])
    pred = torch.tensor([[0, 2, 5], [2, 1, 3]])
    conf = confusion_matrix(pred, target)
    assert int(conf.sum()) == 4
    assert conf[0, 0] == 1 and conf[1, 2] == 1 and conf[2, 2] == 1 and conf[2, 1] == 1


def _tiny_set(n: int = 4, height: int = 64, width: int = 80, seed: int = 0):
    """Images whose label is a deterministic function of colour, so a few steps can learn it."""
    from sensor_codec.learned.data import ImageSet

    rng = np.random.default_rng(seed)
    labels = np.zeros((n, height, width), dtype=np.uint8)
    labels[:, : height // 2] = 0          # "sky" on top
    labels[:, height // 2:] = 3           # "road" below
    labels[:, :, width // 2: width // 2 + 8] = 2  # a "pole"
    palette = np.array([[120, 160, 240], [0, 0, 0], [40, 40, 40], [128, 64, 128]] + [[0, 0, 0]] * 8)
    images = palette[labels] + rng.integers(-10, 10, (n, height, width, 3))
    images = np.clip(images, 0, 255).astype(np.uint8)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(labels), [f"{i}.png" for i in range(n)])


def test_training_steps_decrease_loss_on_a_seeded_batch():
    data = _tiny_set()
    torch.manual_seed(0)
    model = Backbone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    images = data.images.float() / 255.0
    labels = data.labels.long()
    losses = []
    for _ in range(12):
        logits, _ = model(images)
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 2.0  # ~ln(11) at random initialisation
    assert losses[-1] < 0.5 * losses[0]


def test_resumed_training_matches_an_uninterrupted_run(tmp_path):
    data = _tiny_set(n=4)
    config = BackboneTrainConfig(epochs=2, batch_size=2, crop=(48, 64), lr=1e-3, seed=3, eval_every=1)
    straight = train_backbone(data, tmp_path / "straight", config, progress=False)
    config_half = BackboneTrainConfig(epochs=1, batch_size=2, crop=(48, 64), lr=1e-3, seed=3, eval_every=1)
    # The first half must use the 2-epoch schedule too: train 1 of 2 epochs, then resume.
    first = train_backbone(data, tmp_path / "resumed", config, progress=False, max_steps=2)
    assert first["epoch"] == 1 and config_half.epochs == 1
    resumed = train_backbone(data, tmp_path / "resumed", config, progress=False,
                             resume=tmp_path / "resumed")
    assert resumed["epoch"] == straight["epoch"] == 2
    assert resumed["history"][-1]["loss"] == pytest.approx(straight["history"][-1]["loss"], rel=1e-5)
    from safetensors.numpy import load_file

    a = load_file(str(tmp_path / "straight" / "weights.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "weights.safetensors"))
    assert max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a) < 1e-5
    state = json.loads((tmp_path / "resumed" / "state.json").read_text())
    assert state["step"] == 4 and len(state["history"]) == 2


def test_augmentation_keeps_labels_aligned_and_pads_with_void():
    data = _tiny_set(n=2, height=40, width=50)
    gen = torch.Generator().manual_seed(5)
    images, labels = augment_batch(data.images, data.labels, (64, 64), (1.0, 1.0), gen)
    assert images.shape == (2, 3, 64, 64) and labels.shape == (2, 64, 64)
    # Crops larger than the image are padded with the ignore id.
    assert int((labels == IGNORE_INDEX).sum()) == 2 * (64 * 64 - 40 * 50)
    # Pole pixels (label 2) are the dark ones, wherever flip/crop moved them.
    pole = labels == 2
    assert pole.any()
    assert float(images.permute(0, 2, 3, 1)[pole].max()) < 0.35
    again, again_labels = augment_batch(data.images, data.labels, (64, 64), (1.0, 1.0),
                                        torch.Generator().manual_seed(5))
    assert torch.equal(again_labels, labels)


def test_class_weights_favour_rare_classes():
    labels = torch.zeros(1000, dtype=torch.uint8)
    labels[:10] = 2
    labels[10:20] = IGNORE_INDEX
    weights = class_weights(labels)
    assert weights.shape == (NUM_CLASSES,)
    assert weights[2] > 5 * weights[0]


def test_folder_loading_and_its_errors(tmp_path):
    import imagecodecs

    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        imagecodecs.imwrite(str(tmp_path / "train" / f"{i}.png"), rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
        imagecodecs.imwrite(str(tmp_path / "trainannot" / f"{i}.png"), np.full((20, 30), 14, dtype=np.uint8))
    data = load_folder(tmp_path, "train")
    assert data.images.shape == (2, 3, 20, 30)
    assert int(data.labels.max()) == IGNORE_INDEX  # out-of-range ids become void
    (tmp_path / "trainannot" / "1.png").unlink()
    with pytest.raises(ConfigError, match="1.png"):
        load_folder(tmp_path, "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        load_folder(tmp_path / "empty", "nothing")
    with pytest.raises(ConfigError, match="no label folder"):
        load_folder(tmp_path / "trainannot", "nothing")


def test_train_cli_writes_a_resumable_checkpoint(tmp_path):
    import imagecodecs

    from sensor_codec.cli import main

    data = _tiny_set(n=2, height=64, width=64)
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        (tmp_path / f"{split}annot").mkdir()
        for i in range(2):
            imagecodecs.imwrite(str(tmp_path / split / f"{i}.png"),
                               np.ascontiguousarray(data.images[i].permute(1, 2, 0).numpy()))
            imagecodecs.imwrite(str(tmp_path / f"{split}annot" / f"{i}.png"), data.labels[i].numpy())
    out = tmp_path / "ckpt"
    args = ["train", "backbone", "--data", str(tmp_path), "--val", str(tmp_path), "--epochs", "1",
            "--batch-size", "2", "--crop", "64x64", "--out", str(out), "--no-progress", "--eval-every", "1"]
    assert main(args) == 0
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 1 and state["best_miou"] is not None
    assert 0.0 <= state["best_miou"] <= 1.0
    assert main(args[:6] + ["--epochs", "2"] + args[8:] + ["--resume", str(out)]) == 0
    assert json.loads((out / "state.json").read_text())["epoch"] == 2
    assert main(["train", "backbone", "--data", str(tmp_path / "missing"), "--out", str(out)]) == 2


# ------------------------------------------------------------------ shipped weights

def _shipped_backbone():
    from sensor_codec.errors import UnknownModelError
    from sensor_codec.learned.release import default_release

    try:
        return default_release("backbone")
    except UnknownModelError as exc:
        pytest.skip(f"no shipped backbone: {exc}")


def _frames(count: int):
    """Real CamVid val frames when ../shared/data is present, else seeded noise."""
    if CAMVID.is_dir():
        import imagecodecs

        files = sorted((CAMVID / "val").glob("*.png"))[:count]
        return [imagecodecs.imread(str(f)) for f in files]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (360, 480, 3), dtype=np.uint8) for _ in range(count)]


def test_shipped_backbone_onnx_matches_pytorch():
    from sensor_codec.learned.runtime import BackboneRunner

    release = _shipped_backbone()
    ort_runner = BackboneRunner(release=release, backend="onnxruntime", threads=2)
    torch_runner = BackboneRunner(release=release, backend="torch", threads=2)
    agree = total = 0
    for rgb in _frames(3):
        a, b = ort_runner.segment(rgb), torch_runner.segment(rgb)
        assert a.semantic.shape == rgb.shape[:2] and a.semantic.dtype == np.uint8
        assert a.tap.shape == (TAP_CHANNELS, 45, 60)
        assert float(np.abs(a.tap - b.tap).max()) < 1e-3
        agree += int((a.semantic == b.semantic).sum())
        total += a.semantic.size
    assert agree / total > 0.999


def test_shipped_backbone_manifest_and_hash():
    from sensor_codec.learned.release import tensor_hash

    release = _shipped_backbone()
    tensors = release.load_tensors()  # verifies the hash against the manifest
    assert release.model_id == f"backbone-{tensor_hash(tensors)[:12]}"
    assert release.graph_path("backbone").is_file()
    val = release.manifest["metrics"].get("val")
    assert val is not None and 0.3 < val["miou"] <= 1.0


@pytest.mark.skipif(not CAMVID.is_dir(), reason="needs ../shared/data/camvid (real CamVid frames)")
def test_shipped_backbone_segments_real_frames_sensibly():
    import imagecodecs

    from sensor_codec.learned.runtime import BackboneRunner

    runner = BackboneRunner(release=_shipped_backbone(), backend="onnxruntime", threads=2)
    name = sorted((CAMVID / "val").glob("*.png"))[0].name
    semantic = runner.segment(imagecodecs.imread(str(CAMVID / "val" / name))).semantic
    truth = imagecodecs.imread(str(CAMVID / "valannot" / name))
    valid = truth < NUM_CLASSES
    assert float((semantic[valid] == truth[valid]).mean()) > 0.75  # pixel accuracy on one frame


def test_training_data_from_a_rosbag_pairs_labels_by_stamp(tmp_path):
    from sensor_codec.bag.io import BagWriter
    from sensor_codec.frames import CameraFrame
    from sensor_codec.learned.data import load_training_data
    from sensor_codec.messages import frame_to_image, rosbags_types

    types = rosbags_types()
    data = _tiny_set(n=3, height=32, width=48)
    bag = tmp_path / "drive"
    with BagWriter(bag) as writer:
        for i in range(3):
            rgb = np.ascontiguousarray(data.images[i].permute(1, 2, 0).numpy())
            stamp = 1_000 + i
            # bgr8 on the wire: the loader must turn it back into RGB.
            writer.write("/cam/image", stamp, frame_to_image(
                CameraFrame(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8", stamp, "cam"), types))
            if i != 1:  # frame 1 has no label
                writer.write("/cam/labels", stamp, frame_to_image(
                    CameraFrame(data.labels[i].numpy(), "mono8", stamp, "cam"), types))
    labelled = load_training_data(bag, image_topic="/cam/image", label_topic="/cam/labels")
    assert labelled.names == ["1000", "1002"]
    assert torch.equal(labelled.images[1], data.images[2])
    assert torch.equal(labelled.labels[0], data.labels[0])
    images_only = load_training_data(bag, image_topic="/cam/image", need_labels=False)
    assert len(images_only) == 3 and images_only.labels is None
    with pytest.raises(ConfigError, match="--label-topic"):
        load_training_data(bag, image_topic="/cam/image")
