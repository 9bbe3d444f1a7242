"""Frozen configs that round-trip through JSON, and describe themselves in ``help()``.

Every config class of every package derives from ``Config`` and is a frozen dataclass::

    @dataclasses.dataclass(frozen=True)
    class LMConfig(jaxzoo.Config):
        \"\"\"A language model.\"\"\"

        width: int = 256  # residual width
        mixers: tuple[str, ...] = ("conv", "la")  # one per layer

- ``cfg.to_dict()`` / ``Cls.from_dict(d)``, ``cfg.to_json()`` / ``Cls.from_json(s)``, ``cfg.save(dir)`` /
  ``jaxzoo.load_config(dir)``: the JSON records the class (``__class__``) and its ``VERSION``
  (``__version__``), so a folder rebuilds its config without being told the class. Tuples come back as
  tuples and nested configs as their classes, so the result is equal to the original and hashable (usable
  as a ``jax.jit`` static argument). An unknown or missing field, a value of the wrong type or a file from a
  newer version raises ``ValueError`` naming it.
- The trailing ``# comment`` of each field (and comment lines right below it, up to a ``# --- section``
  line) is added to the class docstring, so ``help(LMConfig)`` lists every field with its meaning.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pathlib
import re
import types
import typing
from typing import Any, ClassVar

import numpy as np

CONFIG_FILE = "config.json"
_REGISTRY: dict[str, type] = {}
_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:\s*[^#]*?#\s?(.*)$")
_COMMENT_LINE = re.compile(r"^\s+#\s?(.*)$")


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` from the trailing comments (and comment lines right after) in the class body."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    notes: dict[str, str] = {}
    names = set(getattr(cls, "__annotations__", {}))
    last = None
    for line in lines[1:]:
        field = _FIELD_LINE.match(line)
        if field and field.group(1) in names:
            last = field.group(1)
            notes[last] = field.group(2).strip()
            continue
        comment = _COMMENT_LINE.match(line)
        if comment and last is not None and not comment.group(1).startswith("--"):
            notes[last] += " " + comment.group(1).strip()
            continue
        last = None
    return notes


class Config:
    """Base of jaxzoo's frozen dataclass configs: JSON round trip, registry by class name, field docs.

    Subclasses are decorated with ``@dataclasses.dataclass(frozen=True)``; fields are JSON-able values
    (numbers, strings, ``None``), tuples of them, or nested ``Config`` instances. Bump ``VERSION`` when a
    field changes meaning.
    """

    VERSION: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[_class_name(cls)] = cls
        notes = _field_comments(cls)
        if notes and "__doc__" in cls.__dict__ and cls.__doc__:
            width = max(len(n) for n in notes)
            listing = "\n".join(f"    {n:<{width}}  {t}" for n, t in notes.items())
            cls.__doc__ = inspect.cleandoc(cls.__doc__) + "\n\nFields:\n" + listing + "\n"

    # ------------------------------------------------------------------ to and from plain data
    def to_dict(self) -> dict:
        """A JSON-able dict: every field, plus ``__class__`` and ``__version__``."""
        out: dict[str, Any] = {"__class__": _class_name(type(self)), "__version__": self.VERSION}
        for f in dataclasses.fields(self):
            out[f.name] = _encode(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: typing.Mapping[str, Any]) -> Config:
        """Rebuild a config from ``to_dict``'s output (``__class__`` picks a registered subclass)."""
        if not isinstance(data, typing.Mapping):
            raise ValueError(f"{cls.__name__}.from_dict expects a dict; got {type(data).__name__}")
        data = dict(data)
        target = cls
        name = data.pop("__class__", None)
        if name is not None:
            target = _lookup(name)
            if not issubclass(target, cls):
                raise ValueError(f"the data describes a {name}, which is not a {_class_name(cls)}")
        version = data.pop("__version__", target.VERSION)
        if not isinstance(version, int) or version > target.VERSION:
            raise ValueError(
                f"{target.__name__} data has version {version!r}; this code reads versions <= {target.VERSION}"
            )
        fields = {f.name: f for f in dataclasses.fields(target) if f.init}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{target.__name__} has no field(s) {unknown}; its fields are {sorted(fields)}")
        missing = sorted(set(fields) - set(data))
        if missing:
            raise ValueError(
                f"{target.__name__} data lacks field(s) {missing}; a saved config must list every field"
            )
        hints = typing.get_type_hints(target)
        values = {k: _decode(hints.get(k, Any), v, f"{target.__name__}.{k}") for k, v in data.items()}
        obj = target(**values)
        try:
            hash(obj)
        except TypeError as e:
            raise ValueError(f"{target.__name__} built from this data is not hashable: {e}") from None
        return obj

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{cls.__name__}.from_json: not valid JSON ({e})") from None
        return cls.from_dict(data)

    def save(self, directory: str | pathlib.Path) -> pathlib.Path:
        """Write ``directory/config.json``."""
        return save_config(directory, self)

    @classmethod
    def load(cls, directory: str | pathlib.Path) -> Config:
        """Read ``directory/config.json`` written by ``save``; it must describe a ``cls``."""
        obj = load_config(directory)
        if not isinstance(obj, cls):
            raise ValueError(f"{directory}/{CONFIG_FILE} holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def _lookup(name: str) -> type:
    if name not in _REGISTRY:
        module = name.rsplit(".", 1)[0]
        while module and name not in _REGISTRY:
            try:
                importlib.import_module(module)
            except ImportError:
                pass
            module = module.rsplit(".", 1)[0] if "." in module else ""
    if name not in _REGISTRY:
        raise ValueError(f"unknown config class {name!r}: import the package that defines it")
    return _REGISTRY[name]


def _encode(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    return repr(value)


def _freeze(value: Any) -> Any:
    """JSON lists -> tuples, recursively (for fields typed ``Any``)."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict) and "__class__" in value:
        return Config.from_dict(value)
    return value


def _type_error(where: str, tp: Any, value: Any) -> ValueError:
    name = getattr(tp, "__name__", str(tp))
    return ValueError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")


def _decode(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return _freeze(value)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _type_error(where, tp, value)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, value, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{where}: {value!r} fits none of {tp}: " + "; ".join(errors))
    if origin is typing.Literal:
        if value in args:
            return value
        raise ValueError(f"{where}: expected one of {args}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _type_error(where, tp, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if not args:
            return _freeze(list(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} entries, got {len(value)}: {value!r}")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (list, typing.Sequence) or tp is list:
        if not isinstance(value, list | tuple):
            raise _type_error(where, tp, value)
        inner = args[0] if args else Any
        return [_decode(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise _type_error(where, tp, value)
        inner = args[1] if len(args) == 2 else Any
        return {k: _decode(inner, v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _type_error(where, tp, value)
        return tp.from_dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(where, tp, value)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(where, tp, value)
        return value
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise _type_error(where, tp, value)
        return value
    return _freeze(value)


# ---------------------------------------------------------------------------------------- files
def save_config(directory: str | pathlib.Path, config: Any) -> pathlib.Path:
    """Write ``config`` (a ``Config``, another dataclass, or a JSON-able dict) to ``directory/config.json``."""
    path = pathlib.Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    out = path / CONFIG_FILE
    out.write_text(json.dumps(_encode(config), indent=2, sort_keys=True))
    return out


def load_config(directory: str | pathlib.Path) -> Any:
    """Read ``directory/config.json``: a ``Config`` instance when the file names its class, else the dict.

    Raises ``FileNotFoundError`` when there is no file and ``ValueError`` when it is not valid JSON or does
    not describe its class (unknown/missing fields, wrong types, a newer version).
    """
    path = pathlib.Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: expected a directory written by save_config")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is truncated or corrupt") from None
    if isinstance(data, dict) and "__class__" in data:
        return Config.from_dict(data)
    return data


def same_config(a: Any, b: Any) -> bool:
    """Whether two configs (instances or their saved dicts) describe the same run."""
    return json.dumps(_encode(a), sort_keys=True) == json.dumps(_encode(b), sort_keys=True)


def config_diff(a: Any, b: Any) -> list[str]:
    """Human-readable differences between two configs: ``["lr: 0.001 -> 0.01", ...]``."""
    flat_a, flat_b = _flatten(_encode(a)), _flatten(_encode(b))
    return [
        f"{k}: {flat_a.get(k, '<absent>')!r} -> {flat_b.get(k, '<absent>')!r}"
        for k in sorted(set(flat_a) | set(flat_b))
        if flat_a.get(k, "<absent>") != flat_b.get(k, "<absent>")
    ]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def check_resume_config(workdir: str | pathlib.Path, config: Any, allow_change: bool = False) -> None:
    """Refuse to resume ``workdir`` with a ``config`` other than the one saved there (``ValueError`` listing
    the differences), unless ``allow_change``. Nothing to check when either side is missing."""
    if config is None or allow_change:
        return
    try:
        saved = load_config(workdir)
    except FileNotFoundError:
        return
    if not same_config(saved, config):
        diff = "; ".join(config_diff(saved, config)[:8])
        raise ValueError(
            f"{workdir} holds a run with another config ({diff}). Resuming it would mix two runs: use a new "
            "workdir, or pass allow_config_change=True to continue this one with the new config"
        )
