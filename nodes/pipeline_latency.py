"""End-to-end frame rate and latency of the encoder -> decoder node pipeline.

    .venv/bin/python benchmarks/pipeline_latency.py [--seconds 20] [--rate 10]
        [--camera-codec jpeg] [--quality 90] [--lidar-codec grid] [--max-error 0.01]
        [--width 1920 --height 1080] [--points 120000] [--lidar-bin velodyne.bin]

Four processes, as in deployment: a publisher (a camera driver and a lidar
driver stand-in: sensor_msgs/Image rgb8 and an organised PointCloud2 with
x, y, z, intensity, ring, time), the encoder node, the decoder node (both
started exactly as ``sensor-codec launch`` starts them, with the FastDDS
profile) and this process, which subscribes to the compressed and the
decoded topics.

Latency is receive time minus the header stamp, which the publisher sets
from the wall clock just before publishing, so it covers serialisation,
transport (shared memory), the encoder's queue, conversion and encoding,
the second transport, decoding, the third transport and deserialisation in
this process. The first ``--warmup`` seconds are not counted. Frames/s is
decoded frames with stamps inside the measured window over its length.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from sensor_codec import graph, graph_cli
from sensor_codec.frames import CameraFrame, Modality, PointCloudFrame
from sensor_codec.pipeline_stats import percentile

CAMERA, LIDAR = "bench/camera/image_raw", "bench/lidar/points"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds published before measuring")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second per sensor")
    p.add_argument("--camera-codec", default="jpeg", help="jpeg, webp, ...")
    p.add_argument("--quality", type=int, default=90, help="camera codec quality")
    p.add_argument("--lidar-codec", default="grid", help="grid, draco, ...")
    p.add_argument("--max-error", type=float, default=0.01, help="grid max error (m)")
    p.add_argument("--quantization-bits", type=int, default=14, help="draco quantization bits")
    p.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                   help="any other encoder parameter, e.g. camera.method=0 (webp effort)")
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--points", type=int, default=120_000, help="synthetic lidar points")
    p.add_argument("--lidar-bin", type=Path, default=None,
                   help="KITTI-style float32 x,y,z,intensity .bin to use instead")
    p.add_argument("--domain-id", type=int, default=48)
    p.add_argument("--role", choices=["bench", "publisher"], default="bench",
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- inputs ----------------------------------------------------------------------------

def camera_frames(width: int, height: int, count: int = 2) -> list[CameraFrame]:
    """Street-like test images: sky and road gradients, textured blocks, sensor noise."""
    frames = []
    for k in range(count):
        rng = np.random.default_rng(10 + k)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        sky = yy < height * 0.45
        img = np.empty((height, width, 3), np.float32)
        img[..., 0] = np.where(sky, 120 + 60 * yy / height, 90 + 40 * yy / height)
        img[..., 1] = np.where(sky, 160 + 50 * yy / height, 90 + 30 * yy / height)
        img[..., 2] = np.where(sky, 230 - 20 * yy / height, 95 + 20 * yy / height)
        for _ in range(40):  # buildings, cars, signs
            x0, y0 = rng.integers(0, width - 50), rng.integers(int(height * 0.2), height - 50)
            w, h = rng.integers(30, width // 6), rng.integers(30, height // 4)
            colour = rng.uniform(20, 235, 3)
            stripes = 12 * np.sin(xx[y0:y0 + h, x0:x0 + w] / rng.uniform(2, 15))[..., None]
            img[y0:y0 + h, x0:x0 + w] = colour + stripes
        img += rng.normal(0, 2.5, img.shape)
        frames.append(CameraFrame(np.clip(img, 0, 255).astype(np.uint8), "rgb8", 0, "camera"))
    return frames


def lidar_frames(points: int, lidar_bin: Path | None, count: int = 2) -> list[PointCloudFrame]:
    """An organised 64-beam scan of a street (ground, walls, clutter), or a real scan."""
    if lidar_bin is not None:
        raw = np.fromfile(lidar_bin, dtype="<f4").reshape(-1, 4)
        cloud = PointCloudFrame.from_arrays(
            Modality.LIDAR, x=raw[:, 0], y=raw[:, 1], z=raw[:, 2], intensity=raw[:, 3],
            frame_id="lidar")
        return [cloud] * count
    frames = []
    beams = 64
    columns = max(points // beams, 1)
    for k in range(count):
        rng = np.random.default_rng(20 + k)
        elevation = np.deg2rad(np.linspace(-24.8, 2.0, beams))[:, None]
        azimuth = np.linspace(-np.pi, np.pi, columns, endpoint=False)[None, :]
        # Ground at -1.7 m, walls 8-12 m to the sides, clutter, max range 80 m.
        ground = np.where(elevation < 0, -1.7 / np.sin(np.minimum(elevation, -1e-3)), np.inf)
        wall = 10.0 / np.maximum(np.abs(np.sin(azimuth)), 1e-3) + 2 * np.sin(azimuth * 7)
        distance = np.minimum(np.minimum(ground, wall), 80.0)
        distance = distance * (1 + rng.normal(0, 0.002, distance.shape))
        distance[rng.random(distance.shape) < 0.05] *= rng.uniform(0.2, 0.9)
        horizontal = distance * np.cos(elevation)
        x = (horizontal * np.cos(azimuth)).astype(np.float32)
        y = (horizontal * np.sin(azimuth)).astype(np.float32)
        z = np.broadcast_to(distance * np.sin(elevation), x.shape).astype(np.float32)
        ring = np.broadcast_to(np.arange(beams, dtype=np.uint16)[:, None], x.shape)
        t = np.broadcast_to(np.linspace(0, 0.1, columns, dtype=np.float32)[None, :], x.shape)
        intensity = rng.uniform(0, 100, x.shape).astype(np.float32)
        frames.append(PointCloudFrame.from_arrays(
            Modality.LIDAR, height=beams, x=x, y=y, z=z, intensity=intensity, ring=ring,
            time=t, frame_id="lidar"))
    return frames


# --- publisher process -----------------------------------------------------------------

def publisher(args) -> int:
    """Publish at ``--rate`` for warmup + seconds; print the measured window as JSON."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image, PointCloud2

    from sensor_codec.messages import frame_to_image, frame_to_pointcloud2, rclpy_types

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("bench_sensor_publisher")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    types = rclpy_types()
    streams = [
        (node.create_publisher(Image, CAMERA, qos),
         [frame_to_image(f, types) for f in camera_frames(args.width, args.height)]),
        (node.create_publisher(PointCloud2, LIDAR, qos),
         [frame_to_pointcloud2(f, types) for f in lidar_frames(args.points, args.lidar_bin)]),
    ]
    ticker = threading.Event()  # only used for its interruptible wait
    deadline = time.monotonic() + 60
    while any(pub.get_subscription_count() == 0 for pub, _ in streams):
        if time.monotonic() > deadline:
            sys.stderr.write("publisher: the encoder never subscribed\n")
            return 1
        ticker.wait(0.01)
    total = int(round((args.warmup + args.seconds) * args.rate))
    first_measured = int(round(args.warmup * args.rate))
    start = time.monotonic()
    window = [None, None]
    published = 0
    for i in range(total):
        delay = start + i / args.rate - time.monotonic()
        if delay > 0:
            ticker.wait(delay)
        stamp = time.time_ns()
        for pub, msgs in streams:
            msg = msgs[i % len(msgs)]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            pub.publish(msg)
        if i == first_measured:
            window[0] = stamp
        if i >= first_measured:
            window[1] = stamp
            published += 1
    print(json.dumps({"window_ns": window, "published": published,
                      "publish_late_s": time.monotonic() - (start + (total - 1) / args.rate)}),
          flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


# --- the measuring process ---------------------------------------------------------------

def bench(args) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CompressedImage, Image, PointCloud2

    tmp = Path(tempfile.mkdtemp(prefix="pipeline_latency_"))
    lidar_settings = (f"max_error: {args.max_error}" if args.lidar_codec == "grid" else
                      f"quantization_bits: {args.quantization_bits}"
                      if args.lidar_codec == "draco" else "")
    extra = "\n            ".join(f"{k}: {v}" for k, v in (x.split("=", 1) for x in args.set))
    config = tmp / "pipeline.yaml"
    config.write_text(textwrap.dedent(f"""\
        sensor_codec_encoder:
          ros__parameters:
            camera_topics: [{CAMERA}]
            lidar_topics: [{LIDAR}]
            camera: {{codec: {args.camera_codec}, quality: {args.quality}}}
            lidar: {{codec: {args.lidar_codec}{', ' + lidar_settings if lidar_settings else ''}}}
            diagnostics_period: 1.0
            {extra}
        sensor_codec_decoder:
          ros__parameters:
            diagnostics_period: 1.0
        """))
    specs = graph.pipeline_graph(config)  # checks the config before anything starts
    env = graph_cli.launch_environment(graph.fastdds_profile())
    env.update(ROS_DOMAIN_ID=str(args.domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=str(tmp / "ros_log"))
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE",
                                           "FASTDDS_DEFAULT_PROFILES_FILE")})

    context = Context()
    rclpy.init(context=context, domain_id=args.domain_id,
               signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("bench_observer", context=context)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    arrivals: dict[str, list[tuple[int, int, int]]] = {}  # topic -> (stamp, recv, bytes)
    diagnostics: dict[str, dict[str, str]] = {}
    lock = threading.Lock()

    def on_message(topic):
        def record(msg):
            received = time.time_ns()
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            with lock:
                arrivals.setdefault(topic, []).append((stamp, received, len(msg.data)))
        return record

    def on_diagnostics(msg):
        with lock:
            for status in msg.status:
                diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    observed = {CAMERA + "/sensor_codec": CompressedImage, LIDAR + "/sensor_codec": CompressedImage,
                CAMERA + "/decoded": Image, LIDAR + "/decoded": PointCloud2}
    for topic, msg_type in observed.items():
        node.create_subscription(msg_type, topic, on_message(topic), qos)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    procs = {}
    try:
        for spec in specs:
            procs[spec.name] = subprocess.Popen(graph_cli.node_command(spec), env=env,
                                                stderr=open(tmp / f"{spec.name}.log", "w"))
        procs["publisher"] = subprocess.Popen(
            [sys.executable, "-m", "sensor_codec.nodes.pipeline_latency", "--role", "publisher",
             *sys.argv[1:]], env=env,
            stdout=subprocess.PIPE, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in procs["publisher"].stdout],
                         daemon=True).start()
        try:
            summary = json.loads(lines.get(timeout=args.warmup + args.seconds + 120))
        except queue.Empty:
            sys.stderr.write("publisher gave no summary\n")
            return 1
        t0, t1 = summary["window_ns"]
        decoded = [CAMERA + "/decoded", LIDAR + "/decoded"]

        def in_window(topic):
            with lock:
                return [a for a in arrivals.get(topic, []) if t0 <= a[0] <= t1]

        # Frames still in flight: wait until both decoded streams are complete or quiet.
        done = threading.Event()
        for _ in range(50):
            if all(len(in_window(t)) >= summary["published"] for t in decoded):
                break
            done.wait(0.1)
        with lock:
            final_diagnostics = dict(diagnostics)
        cpu_s = {name: process_cpu_seconds(procs[name].pid)
                 for name in (graph.ENCODER_NAME, graph.DECODER_NAME)}
    finally:
        if "publisher" in procs:  # it exits by itself once its summary is out
            try:
                procs["publisher"].wait(30)
            except subprocess.TimeoutExpired:
                pass  # stopped with the others below
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = {name: proc.wait(30) for name, proc in procs.items()}
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)

    window_s = (t1 - t0) / 1e9 + 1 / args.rate
    print(f"pipeline_latency: {args.width}x{args.height} rgb8 {args.camera_codec} "
          f"(quality {args.quality}) + {lidar_frames(args.points, args.lidar_bin, 1)[0].num_points}"
          f"-point lidar {args.lidar_codec} ({lidar_settings or 'defaults'})"
          f"{''.join(' ' + x for x in args.set)} at {args.rate:g} Hz, "
          f"{summary['published']} frames per sensor over {window_s:.1f} s "
          f"(after {args.warmup:g} s warm-up)")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
          f"publisher finished {summary['publish_late_s'] * 1000:.0f} ms behind schedule")
    header = (f"{'stream':<26} {'frames':>8} {'fps':>6} {'lat p50':>8} {'lat p95':>8} "
              f"{'lat max':>8} {'size KB':>9}")
    print(header)
    print("-" * len(header))
    for topic in observed:
        got = in_window(topic)
        latency_ms = [(r - s) / 1e6 for s, r, _ in got]
        sizes = [b for _, _, b in got]
        label = ("camera" if topic.startswith(CAMERA) else "lidar") + \
            (" compressed" if topic.endswith("sensor_codec") else " decoded (e2e)")
        if not got:
            print(f"{label:<26} {0:>4}/{summary['published']:<3}   (none received)")
            continue
        print(f"{label:<26} {len(got):>4}/{summary['published']:<3} {len(got) / window_s:>6.1f} "
              f"{percentile(latency_ms, 50):>5.0f} ms {percentile(latency_ms, 95):>5.0f} ms "
              f"{max(latency_ms):>5.0f} ms {np.mean(sizes) / 1e3:>9.1f}")
    for name, values in sorted(final_diagnostics.items()):
        print(f"{name}: processing p50 {float(values['latency_p50_ms']):.1f} ms, "
              f"p95 {float(values['latency_p95_ms']):.1f} ms, ratio "
              f"{float(values['compression_ratio']):.1f}, drops {values['drops']}, "
              f"errors {values['errors']}")
    frames = (args.warmup + args.seconds) * args.rate
    print("CPU time per camera + lidar frame pair (whole run, all threads): " + ", ".join(
        f"{name.removeprefix('sensor_codec_')} {1000 * cpu / frames:.0f} ms"
        for name, cpu in cpu_s.items() if cpu is not None))
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        print(f"processes that did not exit cleanly: {bad} (logs in {tmp})")
        return 1
    return 0


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a running process has used (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    args = parse_args(argv)
    return publisher(args) if args.role == "publisher" else bench(args)


if __name__ == "__main__":
    sys.exit(main())
