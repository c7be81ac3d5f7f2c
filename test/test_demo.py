"""The main job end to end: synthetic drive -> bag player -> encoder -> decoder -> probe."""

import json

import pytest

pytest.importorskip("rclpy", reason="the demo runs real ROS 2 nodes")

from sensor_codec.cli import main  # noqa: E402
from sensor_codec.demo import format_table  # noqa: E402
from conftest import ros_domain_id  # noqa: E402


@pytest.mark.timeout(240)
def test_demo_runs_the_node_pipeline_and_reports_every_topic(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "roslog"))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = ros_domain_id(4)
    code = main(["demo", "--out", str(tmp_path), "--duration", "1", "--camera-size", "480x320",
                 "--domain-id", str(domain), "--no-bench",
                 # half speed: on a loaded 2-core CI machine the encoder may otherwise
                 # (correctly) drop frames, which this test does not want to judge
                 "--rate", "0.5"])
    assert code == 0
    report = json.loads((tmp_path / "pipeline_report.json").read_text())
    topics = {t["topic"]: t for t in report["topics"]}
    assert set(topics) == {"/camera/image_raw", "/lidar/points", "/radar/points"}
    for t in topics.values():
        assert t["frames_raw"] == t["frames_expected"] > 0
        assert t["frames_decoded"] == t["frames_raw"], t
        assert t["ratio"] > 1.5
        assert t["latency_ms_p50"] > 0
    camera = topics["/camera/image_raw"]
    assert camera["format"] == "sensor_codec/camera/jpeg; v1; model=classical"
    assert 33.0 < camera["psnr_mean_db"] < 50.0  # jpeg quality 90 of the default config
    lidar = topics["/lidar/points"]
    assert 0.004 < lidar["max_error_m"] <= 0.01  # grid codec at its 1 cm bound
    assert lidar["field_max_error"]["ring"] == 0.0
    radar = topics["/radar/points"]
    assert radar["field_max_error"]["rcs"] <= 0.05 + 1e-6  # 0.1 dBsm resolution
    printed = capsys.readouterr().out
    assert format_table(report) in printed
    assert (tmp_path / "pipeline_table.txt").read_text().strip() == format_table(report)
