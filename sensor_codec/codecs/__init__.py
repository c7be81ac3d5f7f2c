"""Codecs, registered by stable name. ``codec_names()`` lists them."""

from .base import (CLASSICAL_MODEL_ID, Codec, Param, codec_class, codec_names, decode, encode,
                   get_codec, register_codec)

__all__ = ["CLASSICAL_MODEL_ID", "Codec", "Param", "codec_class", "codec_names", "decode",
           "encode", "get_codec", "register_codec"]

# Modules whose import registers built-in codecs. Learned codecs import their
# heavy runtimes (torch, onnxruntime) lazily inside the codec, not here.
_BUILTIN_MODULES = ("camera", "lidar", "radar", "lossless", "x265", "lidar_learned", "radar_learned",
                    "camera_learned")
_loaded = False


def _load_builtin_codecs() -> None:
    global _loaded
    if _loaded:
        return
    import importlib
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:
            # Only tolerate the module itself being absent (not yet written),
            # never a missing dependency inside it.
            if exc.name != f"{__name__}.{mod}":
                raise
    _loaded = True
