"""Where the package's data files (config/, launch/) live, in every kind of install."""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import ConfigError

PACKAGE = "sensor_codec"


def share_dir() -> Path:
    """The directory holding ``config/`` and ``launch/``.

    The source tree when running from a checkout (editable or symlink
    installs), else the package's share directory from the ament index (a
    colcon install), else ``<prefix>/share/sensor_codec`` (a pip install).
    """
    source_root = Path(__file__).resolve().parent.parent
    if (source_root / "package.xml").is_file() and (source_root / "config").is_dir():
        return source_root
    try:
        from ament_index_python.packages import (PackageNotFoundError,
                                                 get_package_share_directory)
    except ImportError:
        pass  # no ament index: a plain pip install, tried next
    else:
        try:
            return Path(get_package_share_directory(PACKAGE))
        except PackageNotFoundError:
            pass  # not a colcon install: tried next
    prefixed = Path(sys.prefix) / "share" / PACKAGE
    if (prefixed / "config").is_dir():
        return prefixed
    raise ConfigError(
        f"cannot find the {PACKAGE} data files (config/, launch/): not in the source tree "
        f"{source_root}, not in the ament index, not in {prefixed}; reinstall the package")


def data_file(*parts: str) -> Path:
    """A file under the share directory, e.g. ``data_file('config', 'pipeline.yaml')``."""
    path = share_dir().joinpath(*parts)
    if not path.exists():
        raise ConfigError(f"installed data file {str(path)!r} is missing; reinstall {PACKAGE}")
    return path
