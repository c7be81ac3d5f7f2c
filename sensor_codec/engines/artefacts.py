"""Engine artefacts: file names, JSON sidecars, and whether a cached engine is usable.

An engine is only valid for the exact model weights, ONNX graph, precision,
shapes, TensorRT version and GPU it was built with, so all of these are in
its identity. The file name carries the readable part::

    <model id>-<graph>-<precision>-<shape tag>[-dla<N>]-trt<version>-<gpu>.engine
    camera-1a2b3c4d5e6f-fused_encoder-fp16-1920x1080-trt10.3.0-orin.engine

(the model id already ends in the weight hash), and ``<same name>.json``
records everything, including the engine file's own sha256. ``decide``
compares a sidecar with what the caller needs and answers load / build /
rebuild with the reasons, which the loader logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError

SIDECAR_VERSION = 1
ENGINE_SUFFIX = ".engine"
ENGINES_ENV = "SENSOR_CODEC_ENGINES"
PRECISIONS = ("fp32", "fp16", "int8")


def slug(text: str) -> str:
    """``"NVIDIA GeForce RTX 4090"`` -> ``"nvidia-geforce-rtx-4090"`` (file-name safe)."""
    cleaned = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    return cleaned or "unknown"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on."""

    model_id: str
    model_sha256: str
    graph: str
    onnx_sha256: str
    precision: str
    shape_tag: str
    profiles: tuple = ()          # per profile: ((input, (min, opt, max)), ...) sorted by input
    tensorrt_version: str = ""
    gpu_name: str = ""
    compute_capability: str = ""
    dla_core: int | None = None
    calibration: str = ""         # int8: identity of the calibration data (source + count + seed)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {list(PRECISIONS)}")

    @staticmethod
    def freeze_profiles(profiles: list[dict]) -> tuple:
        """Profiles as nested tuples (hashable, comparable after a JSON round trip)."""
        return tuple(tuple((name, tuple(tuple(int(d) for d in s) for s in bounds))
                           for name, bounds in sorted(profile.items())) for profile in profiles)

    def profile_dicts(self) -> list[dict]:
        return [{name: bounds for name, bounds in profile} for profile in self.profiles]

    @property
    def filename(self) -> str:
        dla = f"-dla{self.dla_core}" if self.dla_core is not None else ""
        return (f"{self.model_id}-{self.graph}-{self.precision}-{self.shape_tag}{dla}"
                f"-trt{slug(self.tensorrt_version)}-{slug(self.gpu_name)}{ENGINE_SUFFIX}")

    def to_json(self) -> dict:
        data = asdict(self)
        data["profiles"] = [{name: [list(s) for s in bounds] for name, bounds in profile}
                            for profile in self.profiles]
        return data

    @classmethod
    def from_json(cls, data: dict) -> EngineKey:
        fields = dict(data)
        fields["profiles"] = cls.freeze_profiles(fields.get("profiles") or [])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in fields.items() if k in known})


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


@dataclass
class Sidecar:
    """The JSON written next to an engine."""

    key: EngineKey
    engine_sha256: str
    build: dict = field(default_factory=dict)  # options, time, seconds, host, sensor_codec version

    def to_json(self) -> dict:
        return {"sidecar_version": SIDECAR_VERSION, "engine_sha256": self.engine_sha256,
                "key": self.key.to_json(), "build": self.build}

    def write(self, engine_path: str | Path) -> Path:
        path = sidecar_path(engine_path)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)
        return path

    @classmethod
    def read(cls, engine_path: str | Path) -> Sidecar | None:
        """The sidecar, or None when it is missing or unreadable (the engine is then rebuilt)."""
        path = sidecar_path(engine_path)
        try:
            data = json.loads(path.read_text())
            if data.get("sidecar_version") != SIDECAR_VERSION:
                return None
            return cls(key=EngineKey.from_json(data["key"]), engine_sha256=data["engine_sha256"],
                       build=data.get("build", {}))
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            return None


_COMPARED = (("model_sha256", "model weights"), ("onnx_sha256", "ONNX graph"), ("precision", "precision"),
             ("profiles", "input shapes"), ("tensorrt_version", "TensorRT version"), ("gpu_name", "GPU"),
             ("compute_capability", "compute capability"), ("dla_core", "DLA core"),
             ("calibration", "int8 calibration data"))


def mismatches(recorded: EngineKey, wanted: EngineKey) -> list[str]:
    """Human-readable differences that make a recorded engine unusable for ``wanted``."""
    reasons = []
    for attribute, label in _COMPARED:
        have, need = getattr(recorded, attribute), getattr(wanted, attribute)
        if have != need:
            if attribute.endswith("sha256"):
                have, need = str(have)[:12], str(need)[:12]
            if attribute == "profiles":
                have, need = recorded.shape_tag, wanted.shape_tag
                if have == need:
                    have, need = "other profiles", "these profiles"
            reasons.append(f"{label} {have or 'unknown'} != {need or 'unknown'}")
    return reasons


@dataclass(frozen=True)
class Decision:
    """What the loader does with ``path``: "load", "build" (nothing there) or "rebuild" (stale)."""

    action: str
    path: Path
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.action == "load":
            return f"loading engine {self.path.name} (sidecar matches model, TensorRT and GPU)"
        why = "; ".join(self.reasons)
        verb = "building" if self.action == "build" else "rebuilding stale"
        return f"{verb} engine {self.path.name}: {why}"


def decide(folder: str | Path, wanted: EngineKey, *, verify_hash: bool = True, force: bool = False) -> Decision:
    """Load, build or rebuild the engine ``wanted`` names in ``folder``, and why."""
    path = Path(folder) / wanted.filename
    if force:
        return Decision("rebuild" if path.exists() else "build", path, ("rebuild requested",))
    if not path.is_file():
        others = [f"{s.key.filename} ({'; '.join(mismatches(s.key, wanted))})"
                  for s in related_engines(folder, wanted)]
        reasons = ["no engine for this model, graph, precision, shapes, TensorRT and GPU"]
        if others:
            reasons.append("not usable: " + ", ".join(others))
        return Decision("build", path, tuple(reasons))
    sidecar = Sidecar.read(path)
    if sidecar is None:
        return Decision("rebuild", path, (f"sidecar {sidecar_path(path).name} is missing or unreadable",))
    reasons = mismatches(sidecar.key, wanted)
    if verify_hash and not reasons:
        actual = file_sha256(path)
        if actual != sidecar.engine_sha256:
            reasons.append(f"engine file hash {actual[:12]} != sidecar {sidecar.engine_sha256[:12]} "
                           "(file changed or truncated)")
    return Decision("rebuild" if reasons else "load", path, tuple(reasons))


def related_engines(folder: str | Path, wanted: EngineKey) -> list[Sidecar]:
    """Sidecars in ``folder`` for the same model id and graph (built for something else)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = []
    for json_path in sorted(root.glob(f"{wanted.model_id}-{wanted.graph}-*{ENGINE_SUFFIX}.json")):
        sidecar = Sidecar.read(json_path.with_suffix(""))
        if sidecar is not None and sidecar.key.filename != wanted.filename:
            found.append(sidecar)
    return found


def default_engines_dir(explicit: str | Path | None = None) -> Path:
    """Where engines go: ``explicit``, else ``$SENSOR_CODEC_ENGINES``, else the source
    checkout's ``engines/`` when it is writable, else the user cache
    (``$XDG_CACHE_HOME`` or ``~/.cache``; ``%LOCALAPPDATA%`` on Windows)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENGINES_ENV):
        return Path(os.environ[ENGINES_ENV])
    source_root = Path(__file__).resolve().parents[2]
    repo_engines = source_root / "engines"
    if (source_root / "package.xml").is_file() and repo_engines.is_dir() and os.access(repo_engines, os.W_OK):
        return repo_engines
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sensor_codec" / "engines"
