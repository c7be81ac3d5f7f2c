"""ament_python package: builds with colcon in a ROS 2 workspace and with pip."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sensor_codec"

# The ROS nodes live in the repository's nodes/ folder but install inside the
# package namespace (sensor_codec.nodes), never as a top-level "nodes" module.
packages = find_packages(include=[PACKAGE, f"{PACKAGE}.*"]) + [f"{PACKAGE}.nodes"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=packages,
    package_dir={f"{PACKAGE}.nodes": "nodes"},
    package_data={PACKAGE: ["models/*.safetensors", "models/*.onnx", "models/*.json",
                            "models/*.md", "data/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/engines", glob("engines/*.md")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="sensor_codec developers",
    maintainer_email="dev@sensor-codec.invalid",
    description="Learned and reference compression of camera, lidar and radar data for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sensor-codec = sensor_codec.cli:main",
            "encoder_node = sensor_codec.nodes.encoder_node:main",
            "decoder_node = sensor_codec.nodes.decoder_node:main",
            "bag_player = sensor_codec.nodes.bag_player:main",
            "pipeline_probe = sensor_codec.nodes.pipeline_probe:main",
        ],
    },
)
