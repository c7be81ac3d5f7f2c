"""``sensor-codec launch``: run the compress pipeline without ``ros2 launch``.

Starts the processes that ``pipeline_graph`` describes (the same ones
``launch/compress_pipeline.launch.py`` starts), with the same ``--ros-args``,
the FastDDS profile and a ROS log directory; forwards SIGINT/SIGTERM to the
nodes and waits for them. Exit code 0 when every node ended cleanly, 1 when
one failed (the others are then stopped).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .errors import ConfigError
from .graph import (DEFAULT_RATE, NodeSpec, default_config, fastdds_profile, load_config,
                    pipeline_environment, pipeline_graph, ros_args, semantic_topics)

log = logging.getLogger(__name__)

# How long nodes get to stop after the signal is forwarded before they are killed.
STOP_TIMEOUT_S = 15.0
POLL_PERIOD_S = 0.1


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="ROS 2 parameters file for the nodes (default: the installed "
                             "config/pipeline.yaml)")
    parser.add_argument("--no-encoder", action="store_true", help="do not start the encoder")
    parser.add_argument("--no-decoder", action="store_true", help="do not start the decoder")
    parser.add_argument("--bag", type=Path, default=None,
                        help="replay this rosbag (sqlite3 or mcap) into the pipeline")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE,
                        help="replay rate factor (default %(default)s)")
    parser.add_argument("--loop", action="store_true", help="replay the bag in a loop")
    parser.add_argument("--camera-bandwidth-kbps", type=float, default=None, metavar="KBPS",
                        help="bit-rate target per camera topic; the encoder picks the camera "
                             "codec's quality per frame (0 = off; default: as the config says)")
    parser.add_argument("--fastdds-profile", type=Path, default=None,
                        help="FastDDS XML profile (default: the installed "
                             "config/fastdds_profile.xml)")


def node_command(spec: NodeSpec, python: str = sys.executable) -> list[str]:
    """The command line of one node: its console script when installed beside
    this Python or on PATH, else ``python -m <package>.nodes.<executable>``."""
    beside = Path(python).parent / spec.executable
    if beside.is_file() and os.access(beside, os.X_OK):
        program = [str(beside)]
    elif (found := shutil.which(spec.executable)) is not None:
        program = [found]
    else:
        program = [python, "-m", spec.module]
    return program + list(spec.arguments) + ros_args(spec)


def launch_environment(profile: Path | None, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(pipeline_environment(profile))
    if not env.get("ROS_LOG_DIR"):
        env["ROS_LOG_DIR"] = str(Path(tempfile.gettempdir()) / "sensor_codec_ros_log")
    return env


def run(args: argparse.Namespace) -> int:
    specs = pipeline_graph(args.config, encoder=not args.no_encoder,
                           decoder=not args.no_decoder, bag=args.bag, rate=args.rate,
                           loop=args.loop, camera_bandwidth_kbps=args.camera_bandwidth_kbps)
    if not specs:
        raise ConfigError("nothing to launch: --no-encoder and --no-decoder without --bag")
    profile = args.fastdds_profile or fastdds_profile()
    if not Path(profile).is_file():
        raise ConfigError(f"FastDDS profile {str(profile)!r} does not exist")
    env = launch_environment(profile)
    semantic = semantic_topics(load_config(args.config or default_config()))
    if semantic:
        log.info("semantic maps (mono8 class ids) on: %s", ", ".join(semantic))
    return run_processes(specs, env)


def run_processes(specs: list[NodeSpec], env: dict[str, str]) -> int:
    """Start every node, wait, and stop them all on a signal or a failure."""
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs: list[tuple[NodeSpec, subprocess.Popen]] = []
    try:
        for spec in specs:
            cmd = node_command(spec)
            log.info("starting %s: %s", spec.name, " ".join(cmd))
            procs.append((spec, subprocess.Popen(cmd, env={**env, **spec.env})))
        failed = _wait(procs, stop)
        if received:
            log.info("%s received: stopping the nodes", signal.Signals(received[0]).name)
        elif failed:
            log.error("%s exited with code %d: stopping the other nodes", failed[0].name,
                      failed[1])
        stop_sig = signal.SIGTERM if received and received[0] == signal.SIGTERM else signal.SIGINT
        codes = stop_all(procs, stop_sig)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for _, proc in procs:  # only reached alive on an error in this function
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        log.error("nodes that did not exit cleanly: %s", bad)
        return 1
    return 0


def _wait(procs: list[tuple[NodeSpec, subprocess.Popen]],
          stop: threading.Event) -> tuple[NodeSpec, int] | None:
    """Until a signal, a node failing, or every node ending; returns the
    failed node and its exit code, if one failed."""
    while not stop.is_set():
        running = False
        for spec, proc in procs:
            code = proc.poll()
            if code is None:
                running = True
            elif code != 0:
                return spec, code
        if not running:
            return None
        stop.wait(POLL_PERIOD_S)
    return None


def stop_all(procs: list[tuple[NodeSpec, subprocess.Popen]],
              sig: signal.Signals) -> dict[str, int]:
    """Forward ``sig`` to the nodes still running and collect every exit code."""
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    codes = {}
    for spec, proc in procs:
        try:
            codes[spec.name] = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0f s: killing it", spec.name, STOP_TIMEOUT_S)
            proc.kill()
            codes[spec.name] = proc.wait()
    return codes
