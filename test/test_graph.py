"""The node graph (pure Python) and ``sensor-codec launch`` process handling."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from sensor_codec import graph, graph_cli
from sensor_codec.cli import main as cli_main
from sensor_codec.errors import ConfigError
from sensor_codec.graph import NodeSpec, param_value, pipeline_graph, ros_args

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO / "config" / "pipeline.yaml"
LEARNED_CONFIG = REPO / "config" / "pipeline_learned.yaml"


@pytest.fixture
def config(tmp_path):
    """A parameters file whose decoder names no input_topics."""
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent("""\
        sensor_codec_encoder:
          ros__parameters:
            camera_topics: [cam/front]
            lidar_topics: [lidar/top, lidar/rear]
            camera:
              codec: png
        sensor_codec_decoder:
          ros__parameters:
            queue_depth: 4
        """))
    return path


@pytest.fixture
def bag(tmp_path):
    path = tmp_path / "drive_bag"
    path.mkdir()
    return path


@pytest.mark.parametrize("encoder", [True, False])
@pytest.mark.parametrize("decoder", [True, False])
@pytest.mark.parametrize("with_bag", [True, False])
def test_node_specs_for_each_flag_combination(config, bag, encoder, decoder, with_bag):
    specs = pipeline_graph(config, encoder=encoder, decoder=decoder,
                           bag=bag if with_bag else None)
    expected = ([("bag_player", "sensor_codec_bag_player")] if with_bag else []) + \
        ([("encoder_node", "sensor_codec_encoder")] if encoder else []) + \
        ([("decoder_node", "sensor_codec_decoder")] if decoder else [])
    assert [(s.executable, s.name) for s in specs] == expected
    assert all(s.package == "sensor_codec" for s in specs)
    by_name = {s.executable: s for s in specs}
    if encoder:
        enc = by_name["encoder_node"]
        assert enc.parameter_files == [str(config)]
        assert enc.parameters == {} and enc.remappings == [] and enc.arguments == []
    if decoder:
        dec = by_name["decoder_node"]
        assert dec.parameter_files == [str(config)]
        # Derived from the encoder's topics because the file gives none.
        assert dec.parameters == {"input_topics": ["cam/front/sensor_codec",
                                                   "lidar/top/sensor_codec",
                                                   "lidar/rear/sensor_codec"]}
    if with_bag:
        player = by_name["bag_player"]
        assert player.parameter_files == [] and player.parameters == {}
        wait = (["--wait-for-subscribers", "10.0", "--wait-topics", "/cam/front",
                 "/lidar/top", "/lidar/rear"] if encoder else [])
        assert player.arguments == [str(bag), "--rate", "1.0"] + wait


def test_bag_player_arguments(config, bag):
    (player,) = pipeline_graph(config, encoder=False, decoder=False, bag=bag, rate=2.5,
                               loop=True, topics=["/cam/front"])
    assert player.arguments == [str(bag), "--rate", "2.5", "--loop", "--topics", "/cam/front"]
    player = pipeline_graph(config, decoder=False, bag=bag, rate=0.5,
                            wait_for_subscribers=0)[0]
    assert player.arguments == [str(bag), "--rate", "0.5"]


def test_shipped_config_is_consistent():
    nodes = graph.load_config(SHIPPED_CONFIG)
    encoder = nodes[graph.ENCODER_NAME]
    decoder = nodes[graph.DECODER_NAME]
    # The decoder decodes exactly what the encoder publishes.
    assert decoder["input_topics"] == graph.encoder_output_topics(encoder)
    # The topics the synthetic drive and the dataset importers write.
    from sensor_codec.datasets.common import CAMERA_TOPIC, LIDAR_TOPIC, RADAR_TOPIC
    assert ["/" + t for t in graph.encoder_input_topics(encoder)] == [
        CAMERA_TOPIC, LIDAR_TOPIC, RADAR_TOPIC]
    specs = pipeline_graph()  # the installed default is this file
    assert [s.parameter_files for s in specs] == [[str(SHIPPED_CONFIG)]] * 2
    assert specs[1].parameters == {}  # input_topics come from the file


def test_learned_config_is_consistent():
    nodes = graph.load_config(LEARNED_CONFIG)
    encoder, decoder = nodes[graph.ENCODER_NAME], nodes[graph.DECODER_NAME]
    assert decoder["input_topics"] == graph.encoder_output_topics(encoder)
    assert graph.encoder_input_topics(encoder) == graph.encoder_input_topics(
        graph.load_config(SHIPPED_CONFIG)[graph.ENCODER_NAME])
    assert graph.semantic_topics(nodes) == ["camera/image_raw/semantic",
                                            "camera/image_raw/decoded/semantic"]
    assert (encoder["camera"]["codec"], encoder["lidar"]["codec"]) == ("camera_learned",
                                                                       "rangecode")
    assert encoder["lidar"]["semantic"] is True


def test_semantic_topics_follow_codec_suffix_and_outputs():
    assert graph.semantic_topics(graph.load_config(SHIPPED_CONFIG)) == []  # jpeg: no map
    nodes = {graph.ENCODER_NAME: {"camera_topics": ["cam/a", "cam/b"],
                                  "camera": {"codec": "camera_learned"}},
             graph.DECODER_NAME: {"input_topics": ["cam/a/sensor_codec", "cam/b/sensor_codec"],
                                  "output_topics": ["front", "rear"]}}
    assert graph.semantic_topics(nodes) == ["cam/a/semantic", "cam/b/semantic",
                                            "front/semantic", "rear/semantic"]
    nodes[graph.ENCODER_NAME]["semantic_topic_suffix"] = ""
    nodes[graph.DECODER_NAME]["semantic_topic_suffix"] = "/labels"
    assert graph.semantic_topics(nodes) == ["front/labels", "rear/labels"]


def test_camera_bandwidth_override_reaches_the_encoder_only(config):
    encoder, decoder = pipeline_graph(config, camera_bandwidth_kbps=500)
    assert encoder.parameters == {"camera.bandwidth_kbps": 500.0}
    assert ros_args(encoder)[-2:] == ["-p", "camera.bandwidth_kbps:=500.0"]
    assert "camera.bandwidth_kbps" not in decoder.parameters
    assert pipeline_graph(config)[0].parameters == {}  # None: as the file says
    with pytest.raises(ConfigError, match="bandwidth target must be >= 0 kbit/s"):
        pipeline_graph(config, camera_bandwidth_kbps=-5.0)


@pytest.mark.parametrize("config_file", [SHIPPED_CONFIG, LEARNED_CONFIG])
def test_shipped_config_uses_only_declared_parameters(config_file):
    """Every key in the shipped parameters files is a parameter the node
    declares, with a value its table accepts (a typo would otherwise fail at
    start-up)."""
    pytest.importorskip("rclpy", reason="the node parameter tables import rclpy")
    from sensor_codec.codecs import codec_class
    from sensor_codec.frames import Modality
    from sensor_codec.nodes import _ros_common, decoder_node, encoder_node

    encoder = graph.load_config(config_file)[graph.ENCODER_NAME]
    flat = _flatten(encoder)
    specs = {s.name: s for s in encoder_node.TOPIC_PARAMS + _ros_common.COMMON_PARAMS
             + encoder_node.EXTRA_PARAMS}
    for m in Modality:
        codec = flat.get(f"{m.label}.codec", encoder_node.DEFAULT_CODECS[m])
        specs[f"{m.label}.codec"] = encoder_node.codec_param(m)
        for p in codec_class(codec).params:
            specs[f"{m.label}.{p.name}"] = _ros_common.ParamSpec.from_codec_param(m.label, p, codec)
    decoder = _flatten(graph.load_config(config_file)[graph.DECODER_NAME])
    decoder_specs = {s.name: s for s in decoder_node.PARAMS}
    assert set(decoder) <= set(decoder_specs), set(decoder) - set(decoder_specs)
    assert set(flat) <= set(specs), set(flat) - set(specs)
    for name, value in list(flat.items()) + list(decoder.items()):
        spec = specs.get(name) or decoder_specs[name]
        assert isinstance(value, spec.type), (name, value)
        if spec.choices is not None:
            assert value in spec.choices, (name, value)
        if spec.min is not None:
            assert value >= spec.min, (name, value)
        if spec.max is not None:
            assert value <= spec.max, (name, value)


def _flatten(params, prefix=""):
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_ros_args_exact():
    spec = NodeSpec("sensor_codec", "decoder_node", "dec",
                    parameter_files=["/cfg/a.yaml", "/cfg/b.yaml"],
                    parameters={"input_topics": ["cam/sensor_codec", "lidar/sensor_codec"],
                                "queue_depth": 4, "diagnostics_period": 0.5,
                                "enabled": True, "label": "true", "empty": ""},
                    remappings=[("cam/decoded", "/front/decoded")])
    assert ros_args(spec) == [
        "--ros-args", "-r", "__node:=dec",
        "--params-file", "/cfg/a.yaml", "--params-file", "/cfg/b.yaml",
        "-p", "input_topics:=[cam/sensor_codec, lidar/sensor_codec]",
        "-p", "queue_depth:=4", "-p", "diagnostics_period:=0.5",
        "-p", "enabled:=true", "-p", 'label:="true"', "-p", 'empty:=""',
        "-r", "cam/decoded:=/front/decoded",
    ]
    assert ros_args(NodeSpec("p", "x", "n")) == ["--ros-args", "-r", "__node:=n"]
    assert spec.module == "sensor_codec.nodes.decoder_node"


@pytest.mark.parametrize("value, text", [
    (True, "true"), (False, "false"), (3, "3"), (2.0, "2.0"), (0.01, "0.01"),
    ("jpeg", "jpeg"), ("1.5", '"1.5"'), ("a,b", '"a,b"'), ("null", '"null"'),
    (["x", "y"], "[x, y]"), ([1, 2], "[1, 2]"), ([], "[]"),
])
def test_param_value_round_trips_through_yaml(value, text):
    assert param_value(value) == text
    assert yaml.safe_load(text) == value


def test_param_value_refuses_what_the_command_line_cannot_carry():
    with pytest.raises(ConfigError, match="dict"):
        param_value({"a": 1})


def test_graph_errors_name_the_problem(tmp_path, config):
    with pytest.raises(ConfigError, match="cannot read pipeline config"):
        pipeline_graph(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="replay rate must be a positive number"):
        pipeline_graph(config, rate=0.0)
    with pytest.raises(ConfigError, match="does not exist"):
        pipeline_graph(config, bag=tmp_path / "no_bag")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sensor_codec_encoder: [1, 2]\n")
    with pytest.raises(ConfigError, match="ros__parameters"):
        pipeline_graph(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("sensor_codec_encoder:\n  ros__parameters:\n    queue_depth: 3\n")
    with pytest.raises(ConfigError, match="no input_topics"):
        pipeline_graph(empty)
    assert [s.executable for s in pipeline_graph(empty, decoder=False)] == ["encoder_node"]


def test_data_files_found_in_source_tree():
    assert graph.share_dir() == REPO
    assert graph.default_config() == SHIPPED_CONFIG
    assert graph.fastdds_profile() == REPO / "config" / "fastdds_profile.xml"
    assert graph.launch_file() == REPO / "launch" / "compress_pipeline.launch.py"
    assert graph.pipeline_environment() == {
        "FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_profile.xml")}


def test_fastdds_profile_content():
    """64 MiB shared memory, UDPv4 on loopback only, builtin transports off."""
    import xml.etree.ElementTree as ET

    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(REPO / "config" / "fastdds_profile.xml").getroot()
    descriptors = {d.findtext("d:transport_id", namespaces=ns): d
                   for d in root.iterfind(".//d:transport_descriptor", ns)}
    shm = [d for d in descriptors.values() if d.findtext("d:type", namespaces=ns) == "SHM"]
    udp = [d for d in descriptors.values() if d.findtext("d:type", namespaces=ns) == "UDPv4"]
    assert len(shm) == 1 and len(udp) == 1
    assert int(shm[0].findtext("d:segment_size", namespaces=ns)) == 64 * 1024 * 1024
    assert int(shm[0].findtext("d:maxMessageSize", namespaces=ns)) == 64 * 1024 * 1024
    allowed = [i.get("name") for i in udp[0].iterfind(".//d:allowlist/d:interface", ns)]
    assert allowed == ["127.0.0.1"]
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"
    used = [t.text for t in participant.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert sorted(used) == sorted(descriptors)


# --- sensor-codec launch --------------------------------------------------------------

def test_node_command_prefers_console_script_then_module(tmp_path):
    spec = NodeSpec("sensor_codec", "encoder_node", "enc", parameter_files=["/p.yaml"],
                    arguments=["--flag"])
    fake_python = tmp_path / "bin" / "python"
    fake_python.parent.mkdir()
    # No console script beside this python and (normally) none on PATH: module fallback.
    cmd = graph_cli.node_command(NodeSpec("sensor_codec", "no_such_node_xyz", "n"),
                                 python=str(fake_python))
    assert cmd == [str(fake_python), "-m", "sensor_codec.nodes.no_such_node_xyz",
                   "--ros-args", "-r", "__node:=n"]
    script = fake_python.parent / "encoder_node"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    cmd = graph_cli.node_command(spec, python=str(fake_python))
    assert cmd == [str(script), "--flag", "--ros-args", "-r", "__node:=enc",
                   "--params-file", "/p.yaml"]


def test_launch_environment():
    env = graph_cli.launch_environment(Path("/x/profile.xml"), base={"PATH": "/bin"})
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == "/x/profile.xml"
    assert env["ROS_LOG_DIR"].endswith("sensor_codec_ros_log")
    assert env["PATH"] == "/bin"
    env = graph_cli.launch_environment(Path("/x/p.xml"), base={"ROS_LOG_DIR": "/mine"})
    assert env["ROS_LOG_DIR"] == "/mine"


def test_launch_command_refuses_bad_requests(tmp_path, capsys):
    assert cli_main(["launch", "--no-encoder", "--no-decoder"]) == 2
    assert "nothing to launch" in capsys.readouterr().err
    assert cli_main(["launch", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read pipeline config" in capsys.readouterr().err
    assert cli_main(["launch", "--fastdds-profile", str(tmp_path / "none.xml")]) == 2
    assert "FastDDS profile" in capsys.readouterr().err
    assert cli_main(["launch", "--camera-bandwidth-kbps", "-1"]) == 2
    assert "bandwidth target must be >= 0 kbit/s" in capsys.readouterr().err


# Fake node: reports the signal that stopped it in a file. It signals that its
# handler is installed by opening a FIFO, which unblocks whoever waits on it.
FAKE_NODE = textwrap.dedent("""\
    import signal, sys
    out, ready = sys.argv[1], sys.argv[2]
    def stop(signum, frame):
        open(out, "w").write(signal.Signals(signum).name)
        sys.exit(0)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    open(ready, "w").close()
    while True:
        signal.pause()
    """)
# Fake failing node: exits 3 once the other fake node is ready.
FAILING_NODE = "import sys; open(sys.argv[1]).read(); sys.exit(3)"


def _fake_specs(tmp_path, monkeypatch, failing):
    ready = tmp_path / "ready.fifo"
    os.mkfifo(ready)
    commands = {"good": [sys.executable, "-c", FAKE_NODE, str(tmp_path / "good.out"), str(ready)]}
    if failing:
        commands["bad"] = [sys.executable, "-c", FAILING_NODE, str(ready)]
    monkeypatch.setattr(graph_cli, "node_command", lambda spec: commands[spec.name])
    return [NodeSpec("sensor_codec", name, name) for name in commands], ready


def test_failing_node_stops_the_others_and_fails(tmp_path, monkeypatch):
    specs, _ = _fake_specs(tmp_path, monkeypatch, failing=True)
    assert graph_cli.run_processes(specs, dict(os.environ)) == 1
    assert (tmp_path / "good.out").read_text() == "SIGINT"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_is_forwarded_to_the_nodes(tmp_path, sig):
    """The launcher (its own process) gets the signal, passes it on, exits 0."""
    ready = tmp_path / "ready.fifo"
    os.mkfifo(ready)
    launcher = textwrap.dedent(f"""\
        import os, sys
        from sensor_codec import graph_cli
        from sensor_codec.graph import NodeSpec
        cmd = [sys.executable, "-c", {FAKE_NODE!r}, {str(tmp_path / "good.out")!r},
               {str(ready)!r}]
        graph_cli.node_command = lambda spec: cmd
        sys.exit(graph_cli.run_processes([NodeSpec("sensor_codec", "good", "good")],
                                         dict(os.environ)))
        """)
    proc = subprocess.Popen([sys.executable, "-c", launcher])
    try:
        with open(ready):  # returns once the fake node has installed its handlers
            pass
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "good.out").read_text() == sig.name
