"""The codec library must work without ROS: importing it never loads rclpy."""

import pkgutil
import subprocess
import sys

import sensor_codec


def _library_modules():
    for info in pkgutil.walk_packages(sensor_codec.__path__, "sensor_codec."):
        if not info.name.startswith("sensor_codec.nodes"):
            yield info.name


def test_no_library_module_imports_rclpy():
    modules = sorted(_library_modules())
    assert "sensor_codec.wire" in modules and "sensor_codec.messages" in modules
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
