"""Small helpers for examples and benchmarks: output folders and JSON results."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from jaxzoo.config import _encode


def output_dir(name: str, base: str | pathlib.Path | None = None, *, announce: bool = True) -> pathlib.Path:
    """Create and return the folder an example writes its results to (``outputs/<name>`` by default)."""
    path = pathlib.Path(base) if base is not None else pathlib.Path("outputs") / name
    path.mkdir(parents=True, exist_ok=True)
    if announce:
        print(f"writing results to {path.absolute()}")
    return path


def write_json(path: str | pathlib.Path, obj: Any) -> pathlib.Path:
    """Write ``obj`` (dicts, lists, dataclasses, numpy scalars) as indented JSON."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_encode(obj), indent=2))
    return path
