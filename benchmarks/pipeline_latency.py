"""End-to-end frame rate and latency of the encoder -> decoder node pipeline.

    .venv/bin/python benchmarks/pipeline_latency.py [--seconds 20] [--rate 10] ...

The benchmark publishes and subscribes through ROS 2, so its code lives with
the other ROS programs in ``nodes/pipeline_latency.py`` (installed as
``sensor_codec.nodes.pipeline_latency``); this file only runs it.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("sensor_codec.nodes.pipeline_latency", run_name="__main__", alter_sys=True)
