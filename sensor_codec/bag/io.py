"""Read and write rosbag2 bags (sqlite3 or mcap) without ROS, through ``rosbags``.

Everything here works on raw CDR bytes or on ``rosbags`` message objects (the
ones ``sensor_codec.messages.rosbags_types()`` builds); nothing imports rclpy.

Interruption and hard kills
---------------------------
``BagWriter`` always closes its bag when the ``with`` block ends, also on an
exception or ``KeyboardInterrupt``, so an interrupted conversion leaves a
readable bag holding every message written before the interruption (rosbags
writes ``metadata.yaml`` on close).

On a hard kill (SIGKILL, power loss) nothing can run at the end:

* sqlite3 bags are committed every ``checkpoint_every`` messages (or
  ``checkpoint_bytes``), so the ``.db3`` file keeps every message up to the
  last checkpoint, but the bag has no ``metadata.yaml``. ``repair_bag(path)``
  (``sensor-codec bag repair``) rolls back the unfinished transaction and
  rebuilds ``metadata.yaml``.
* mcap bags are written chunk by chunk but their index and footer are only
  written on close; a killed mcap bag cannot be repaired here. Use sqlite3
  when a long conversion may be killed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.base import TypesysError

from ..errors import BagError

log = logging.getLogger(__name__)

STORAGES: dict[str, StoragePlugin] = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
DEFAULT_STORAGE = "sqlite3"
# sqlite3 commits after this many messages or bytes, whichever comes first:
# what a hard kill may lose, at most.
DEFAULT_CHECKPOINT_EVERY = 100
DEFAULT_CHECKPOINT_BYTES = 64 << 20
BAG_VERSION = 9


class BagMessage(NamedTuple):
    """One stored message: unpacks as ``(topic, msgtype, timestamp_ns, data)``."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


@functools.cache
def typestore():
    """The ROS 2 Kilted typestore used to (de)serialise every bag message."""
    return get_typestore(Stores.ROS2_KILTED)


def storage_plugin(storage: str) -> StoragePlugin:
    try:
        return STORAGES[storage]
    except KeyError:
        raise BagError(
            f"unknown bag storage {storage!r}; choose one of {sorted(STORAGES)}") from None


def detect_storage(path: str | Path) -> str:
    """``'sqlite3'`` or ``'mcap'`` for an existing bag directory or storage file."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {str(path)!r} does not exist")
    files = [path] if path.is_file() else sorted(path.iterdir())
    suffixes = {f.suffix for f in files}
    if ".mcap" in suffixes:
        return "mcap"
    if ".db3" in suffixes:
        return "sqlite3"
    raise BagError(f"{str(path)!r} holds no .db3 or .mcap file: not a rosbag2 bag")


@contextlib.contextmanager
def open_reader(path: str | Path) -> Iterator[Reader]:
    """Context manager giving an opened rosbags ``Reader``, closed on exit."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {str(path)!r} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        hint = (f"; run `sensor-codec bag repair {path}` to rebuild it from the .db3 file"
                if any(path.glob("*.db3")) else "")
        raise BagError(f"bag {str(path)!r} has no metadata.yaml (not a bag, or its writer "
                       f"was killed){hint}")
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError) as exc:
        raise BagError(f"cannot open bag {str(path)!r}: {exc}") from None
    try:
        yield reader
    finally:
        reader.close()


def bag_topics(path: str | Path) -> dict[str, str]:
    """``{topic: msgtype}`` of every topic in the bag."""
    with open_reader(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Yield ``(topic, msgtype, timestamp_ns, raw_cdr_bytes)`` in time order.

    ``topics`` restricts the output; naming a topic the bag lacks is an error
    (a typo would otherwise silently give nothing).
    """
    with open_reader(path) as reader:
        connections = reader.connections
        if topics is not None:
            wanted = set(topics)
            missing = wanted - {c.topic for c in connections}
            if missing:
                raise BagError(
                    f"bag {str(path)!r} has no topic(s) {sorted(missing)}; it has "
                    f"{sorted({c.topic for c in connections})}")
            connections = [c for c in connections if c.topic in wanted]
        if not connections:
            return
        try:
            for conn, timestamp, data in reader.messages(connections=connections):
                yield BagMessage(conn.topic, conn.msgtype, int(timestamp), bytes(data))
        except ReaderError as exc:
            raise BagError(f"cannot read messages from bag {str(path)!r}: {exc}") from None


def deserialize(data: bytes, msgtype: str) -> Any:
    """CDR bytes -> rosbags message object."""
    if msgtype not in typestore().types:
        raise BagError(f"message type {msgtype!r} is not in the ROS 2 Kilted typestore")
    try:
        return typestore().deserialize_cdr(data, msgtype)
    except KeyError:
        raise BagError(f"message type {msgtype!r} is not in the ROS 2 Kilted typestore") from None
    except (SerdeError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise BagError(f"cannot deserialise a {msgtype} message: {exc}") from None


def msgtype_of(msg: Any) -> str:
    msgtype = getattr(msg, "__msgtype__", None)
    if not isinstance(msgtype, str):
        raise BagError(f"{type(msg).__name__} is not a rosbags message object (no __msgtype__); "
                       "build messages with sensor_codec.messages.rosbags_types()")
    return msgtype


def serialize(msg: Any) -> bytes:
    """rosbags message object -> CDR bytes."""
    msgtype = msgtype_of(msg)
    try:
        return bytes(typestore().serialize_cdr(msg, msgtype))
    except KeyError:
        raise BagError(f"message type {msgtype!r} is not in the ROS 2 Kilted typestore") from None
    except (SerdeError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise BagError(f"cannot serialise a {msgtype} message: {exc}") from None


class BagWriter:
    """Write a new bag; use as a context manager.

    The bag is closed (and readable) when the block ends, whatever the reason;
    see the module docstring for what a hard kill leaves behind.

    ``overwrite=True`` replaces an existing bag at ``path`` (only a directory
    that looks like a bag, never an arbitrary folder).
    """

    def __init__(self, path: str | Path, storage: str = DEFAULT_STORAGE, *,
                 overwrite: bool = False,
                 checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
                 checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
                 custom_data: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.storage = storage
        self._plugin = storage_plugin(storage)
        if checkpoint_every < 1:
            raise BagError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.checkpoint_every = checkpoint_every
        self.checkpoint_bytes = checkpoint_bytes
        self.custom_data = dict(custom_data or {})
        for key, value in self.custom_data.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise BagError(f"custom_data must map str to str, got {key!r}: {value!r}")
        self.overwrite = overwrite
        self._writer: Writer | None = None
        self._connections: dict[str, Any] = {}
        self._since_checkpoint = 0
        self._bytes_since_checkpoint = 0
        self.counts: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------
    def open(self) -> "BagWriter":
        if self._writer is not None:
            raise BagError(f"bag {str(self.path)!r} is already open")
        if self.path.exists():
            if not self.overwrite:
                raise BagError(f"{str(self.path)!r} exists already; choose a new output path "
                               "or pass overwrite")
            _remove_bag(self.path)
        writer = Writer(self.path, version=BAG_VERSION, storage_plugin=self._plugin)
        for key, value in self.custom_data.items():
            writer.set_custom_data(key, value)
        try:
            writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f"cannot create bag {str(self.path)!r}: {exc}") from None
        self._writer = writer
        return self

    def close(self) -> None:
        """Finish the bag: flush, index, write metadata.yaml. Idempotent."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except (WriterError, OSError, sqlite3.Error) as exc:
                raise BagError(f"cannot finish bag {str(self.path)!r}: {exc}") from None

    def __enter__(self) -> "BagWriter":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        # Close (not abort) also on errors and Ctrl-C: what was written stays readable.
        self.close()

    # -- writing ---------------------------------------------------------------
    @property
    def topics(self) -> dict[str, str]:
        return {t: c.msgtype for t, c in self._connections.items()}

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare a topic; adding the same topic and type again is a no-op."""
        writer = self._require_open()
        if not isinstance(topic, str) or not topic.startswith("/"):
            raise BagError(f"topic name {topic!r} must be an absolute name like '/lidar/points'")
        existing = self._connections.get(topic)
        if existing is not None:
            if existing.msgtype != msgtype:
                raise BagError(f"topic {topic!r} already has type {existing.msgtype}, "
                               f"cannot add it again as {msgtype}")
            return
        if msgtype not in typestore().types:
            raise BagError(f"message type {msgtype!r} is not in the ROS 2 Kilted typestore; "
                           "cannot write it")
        try:
            self._connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore())
        except (WriterError, TypesysError, sqlite3.Error) as exc:
            raise BagError(f"cannot add topic {topic!r} ({msgtype}): {exc}") from None
        self.counts[topic] = 0

    def write(self, topic: str, timestamp_ns: int, raw_or_msg: Any) -> None:
        """Write CDR bytes, or a rosbags message object (its topic is added if new)."""
        writer = self._require_open()
        if isinstance(raw_or_msg, (bytes, bytearray, memoryview)):
            data = bytes(raw_or_msg)
            if topic not in self._connections:
                raise BagError(f"topic {topic!r} was not added; call add_topic(topic, msgtype) "
                               "before writing raw bytes to it")
        else:
            msgtype = msgtype_of(raw_or_msg)
            self.add_topic(topic, msgtype)
            if self._connections[topic].msgtype != msgtype:
                raise BagError(f"topic {topic!r} has type {self._connections[topic].msgtype}, "
                               f"got a {msgtype} message")
            data = serialize(raw_or_msg)
        if isinstance(timestamp_ns, bool) or not isinstance(timestamp_ns, int) or timestamp_ns < 0:
            raise BagError(f"timestamp must be a non-negative int of nanoseconds, "
                           f"got {timestamp_ns!r}")
        try:
            writer.write(self._connections[topic], timestamp_ns, data)
        except (WriterError, sqlite3.Error, OSError) as exc:
            raise BagError(f"cannot write to {topic!r} in {str(self.path)!r}: {exc}") from None
        self.counts[topic] += 1
        self._since_checkpoint += 1
        self._bytes_since_checkpoint += len(data)
        if (self._since_checkpoint >= self.checkpoint_every
                or self._bytes_since_checkpoint >= self.checkpoint_bytes):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Commit what sqlite3 holds so far, so a hard kill keeps it (mcap: no-op)."""
        self._since_checkpoint = self._bytes_since_checkpoint = 0
        storage = getattr(self._writer, "storage", None)
        conn = getattr(storage, "conn", None)
        if isinstance(conn, sqlite3.Connection):
            conn.commit()

    def _require_open(self) -> Writer:
        if self._writer is None:
            raise BagError(f"bag {str(self.path)!r} is not open; use `with BagWriter(...)`")
        return self._writer


def write_frames(path: str | Path, items: Iterable[tuple[str, int, Any]],
                 storage: str = DEFAULT_STORAGE, *, overwrite: bool = False) -> dict[str, int]:
    """Write ``(topic, timestamp_ns, message_object)`` items; returns messages per topic."""
    with BagWriter(path, storage, overwrite=overwrite) as writer:
        for topic, timestamp_ns, msg in items:
            writer.write(topic, timestamp_ns, msg)
        return dict(writer.counts)


def _remove_bag(path: Path) -> None:
    looks_like_bag = path.is_dir() and (
        (path / "metadata.yaml").exists() or any(path.glob("*.db3")) or any(path.glob("*.mcap")))
    if not looks_like_bag:
        raise BagError(f"refusing to overwrite {str(path)!r}: it is not a rosbag2 bag directory")
    shutil.rmtree(path)


def repair_bag(path: str | Path) -> dict[str, int]:
    """Rebuild ``metadata.yaml`` of an sqlite3 bag from its ``.db3`` file.

    For a bag whose writer was killed: the unfinished transaction is rolled
    back (sqlite3 does this when the file is opened for writing) and every
    committed message is kept. Returns messages per topic.
    """
    path = Path(path)
    if not path.is_dir():
        raise BagError(f"bag directory {str(path)!r} does not exist")
    db_files = sorted(path.glob("*.db3"))
    if not db_files:
        kind = " (mcap bags cannot be repaired)" if any(path.glob("*.mcap")) else ""
        raise BagError(f"{str(path)!r} holds no .db3 file to repair{kind}")
    topics: dict[int, dict] = {}
    counts: dict[int, tuple[int, int, int]] = {}
    for db in db_files:
        try:
            conn = sqlite3.connect(str(db))
            try:
                rows = conn.execute("SELECT id, name, type, serialization_format, "
                                    "offered_qos_profiles, type_description_hash FROM topics")
                for tid, name, msgtype, fmt, qos, digest in rows:
                    topics.setdefault(tid, {"name": name, "type": msgtype,
                                            "serialization_format": fmt,
                                            "offered_qos_profiles": qos or "",
                                            "type_description_hash": digest or ""})
                for tid, n, t0, t1 in conn.execute(
                        "SELECT topic_id, count(*), min(timestamp), max(timestamp) "
                        "FROM messages GROUP BY topic_id"):
                    old = counts.get(tid, (0, t0, t1))
                    counts[tid] = (old[0] + n, min(old[1], t0), max(old[2], t1))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise BagError(f"cannot read {str(db)!r}: {exc}") from None
    total = sum(c[0] for c in counts.values())
    start = min((c[1] for c in counts.values()), default=0)
    end = max((c[2] for c in counts.values()), default=0)
    info = {
        "version": BAG_VERSION,
        "storage_identifier": "sqlite3",
        "relative_file_paths": [db.name for db in db_files],
        "duration": {"nanoseconds": max(0, end - start)},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": total,
        "topics_with_message_count": [
            {"topic_metadata": meta, "message_count": counts.get(tid, (0,))[0]}
            for tid, meta in sorted(topics.items())],
        "compression_format": "",
        "compression_mode": "",
        "files": [{"path": db.name, "starting_time": {"nanoseconds_since_epoch": start},
                   "duration": {"nanoseconds": max(0, end - start)}, "message_count": total}
                  for db in db_files[:1]],
        "custom_data": None,
        "ros_distro": "rosbags",
    }
    import yaml  # pyyaml; only needed here
    tmp = path / "metadata.yaml.tmp"
    tmp.write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False))
    tmp.replace(path / "metadata.yaml")
    log.info("rebuilt %s/metadata.yaml: %d messages on %d topics", path, total, len(topics))
    return {meta["name"]: counts.get(tid, (0,))[0] for tid, meta in topics.items()}
