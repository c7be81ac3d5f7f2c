"""launch/compress_pipeline.launch.py against small stand-ins for launch/launch_ros.

launch and launch_ros are not installable here (PyPI's ``launch`` is an
unrelated project), so the test puts minimal modules with the real names and
signatures into sys.modules, runs the launch file and checks that the Node
actions it builds are exactly the processes ``pipeline_graph`` describes.
"""

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from sensor_codec.graph import pipeline_graph

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / "launch" / "compress_pipeline.launch.py"

# Keyword arguments launch_ros.actions.Node takes itself, and those it passes
# on to launch.actions.ExecuteProcess (a subset: what a launch file uses).
NODE_KWARGS = {"package", "executable", "name", "namespace", "exec_name", "parameters",
               "remappings", "ros_arguments", "arguments"}
EXECUTE_PROCESS_KWARGS = {"additional_env", "output", "emulate_tty", "cwd", "env",
                          "respawn", "respawn_delay", "sigterm_timeout", "sigkill_timeout",
                          "prefix", "log_cmd", "on_exit"}


class LaunchDescription:
    def __init__(self, initial_entities=None):
        self.entities = list(initial_entities or [])


class DeclareLaunchArgument:
    def __init__(self, name, *, default_value=None, description=None, choices=None):
        self.name, self.default_value = name, default_value
        self.description, self.choices = description, choices


class SetEnvironmentVariable:
    def __init__(self, name, value):
        self.name, self.value = name, value


class OpaqueFunction:
    def __init__(self, *, function, args=None, kwargs=None):
        self.function, self.args, self.kwargs = function, args or [], kwargs or {}

    def execute(self, context):
        return self.function(context, *self.args, **self.kwargs)


class LaunchConfiguration:
    def __init__(self, variable_name, *, default=None):
        self.variable_name, self.default = variable_name, default

    def perform(self, context):
        return context.launch_configurations[self.variable_name]


class Node:
    def __init__(self, **kwargs):
        unknown = set(kwargs) - NODE_KWARGS - EXECUTE_PROCESS_KWARGS
        if unknown:
            raise TypeError(f"launch_ros Node got unexpected arguments {sorted(unknown)}")
        self.kwargs = kwargs


class LaunchContext:
    def __init__(self, launch_configurations):
        self.launch_configurations = dict(launch_configurations)


def _module(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


@pytest.fixture
def launch_module(monkeypatch):
    """The launch file, executed against the stand-ins."""
    fakes = {
        "launch": _module("launch", LaunchDescription=LaunchDescription),
        "launch.actions": _module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                                  OpaqueFunction=OpaqueFunction,
                                  SetEnvironmentVariable=SetEnvironmentVariable),
        "launch.substitutions": _module("launch.substitutions",
                                        LaunchConfiguration=LaunchConfiguration),
        "launch_ros": _module("launch_ros"),
        "launch_ros.actions": _module("launch_ros.actions", Node=Node),
        # The package's share directory, as a colcon install would give it.
        "ament_index_python": _module("ament_index_python"),
        "ament_index_python.packages": _module(
            "ament_index_python.packages",
            get_package_share_directory=lambda package: str(REPO) if package == "sensor_codec"
            else pytest.fail(f"unexpected package {package}")),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("compress_pipeline_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _description(launch_module):
    ld = launch_module.generate_launch_description()
    arguments = {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    env = [e for e in ld.entities if isinstance(e, SetEnvironmentVariable)]
    opaque = [e for e in ld.entities if isinstance(e, OpaqueFunction)]
    return ld, arguments, env, opaque


def test_file_imports_the_real_launch_api():
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {(node.module, alias.name) for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert {("launch", "LaunchDescription"),
            ("launch.actions", "DeclareLaunchArgument"),
            ("launch.actions", "OpaqueFunction"),
            ("launch.actions", "SetEnvironmentVariable"),
            ("launch.substitutions", "LaunchConfiguration"),
            ("launch_ros.actions", "Node"),
            ("ament_index_python.packages", "get_package_share_directory")} <= imported


def test_arguments_and_environment(launch_module):
    ld, arguments, env, opaque = _description(launch_module)
    assert set(arguments) == {"config", "encoder", "decoder", "bag", "rate", "loop",
                              "camera_bandwidth_kbps"}
    assert arguments["config"].default_value == str(REPO / "config" / "pipeline.yaml")
    names = ("encoder", "decoder", "bag", "rate", "loop", "camera_bandwidth_kbps")
    assert {n: arguments[n].default_value for n in names} == {
        "encoder": "true", "decoder": "true", "bag": "", "rate": "1.0", "loop": "false",
        "camera_bandwidth_kbps": ""}  # empty: the parameters file decides
    assert arguments["encoder"].choices == ["true", "false"]
    assert [(e.name, e.value) for e in env] == [
        ("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_profile.xml"))]
    assert len(opaque) == 1
    # The environment is set before the nodes are created.
    assert ld.entities.index(env[0]) < ld.entities.index(opaque[0])


def _run(launch_module, **overrides):
    _, arguments, _, (opaque,) = _description(launch_module)
    configurations = {name: arg.default_value for name, arg in arguments.items()}
    configurations.update(overrides)
    return opaque.execute(LaunchContext(configurations))


def _expected(specs):
    expected = []
    for spec in specs:
        parameters = list(spec.parameter_files) + ([spec.parameters] if spec.parameters else [])
        expected.append({"package": spec.package, "executable": spec.executable,
                         "name": spec.name, "parameters": parameters,
                         "remappings": spec.remappings, "arguments": spec.arguments,
                         "additional_env": spec.env})
    return expected


def _actual(nodes):
    keys = ("package", "executable", "name", "parameters", "remappings", "arguments",
            "additional_env")
    return [{k: n.kwargs[k] for k in keys} for n in nodes]


def test_default_launch_matches_the_graph(launch_module):
    nodes = _run(launch_module)
    assert _actual(nodes) == _expected(pipeline_graph(REPO / "config" / "pipeline.yaml"))
    assert [n.kwargs["executable"] for n in nodes] == ["encoder_node", "decoder_node"]
    assert nodes[0].kwargs["parameters"] == [str(REPO / "config" / "pipeline.yaml")]
    assert all(n.kwargs["output"] == "screen" for n in nodes)


def test_bag_and_flags_match_the_graph(launch_module, tmp_path):
    bag = tmp_path / "drive"
    bag.mkdir()
    config = tmp_path / "p.yaml"
    config.write_text("sensor_codec_encoder:\n  ros__parameters:\n"
                      "    lidar_topics: [lidar/top]\n")
    nodes = _run(launch_module, config=str(config), bag=str(bag), rate="2.0", loop="true",
                 decoder="false")
    specs = pipeline_graph(config, decoder=False, bag=bag, rate=2.0, loop=True)
    assert _actual(nodes) == _expected(specs)
    assert nodes[0].kwargs["arguments"][:4] == [str(bag), "--rate", "2.0", "--loop"]

    nodes = _run(launch_module, config=str(config), encoder="false")
    (decoder,) = nodes
    assert decoder.kwargs["parameters"] == [str(config),
                                            {"input_topics": ["lidar/top/sensor_codec"]}]


def test_camera_bandwidth_argument_matches_the_graph(launch_module):
    learned = REPO / "config" / "pipeline_learned.yaml"
    nodes = _run(launch_module, config=str(learned), camera_bandwidth_kbps="750")
    assert _actual(nodes) == _expected(pipeline_graph(learned, camera_bandwidth_kbps=750.0))
    assert nodes[0].kwargs["parameters"] == [str(learned), {"camera.bandwidth_kbps": 750.0}]
    assert nodes[1].kwargs["parameters"][0] == str(learned)


def test_bad_flag_is_refused(launch_module):
    with pytest.raises(ValueError, match="encoder:='yes' must be true or false"):
        _run(launch_module, encoder="yes")
    with pytest.raises(ValueError, match="camera_bandwidth_kbps:='fast' must be a number"):
        _run(launch_module, camera_bandwidth_kbps="fast")
