"""Input pipelines on grain: arrays written once to disk as shards, streamed, shuffled, sharded by process,
and resumable exactly (the iterator's state is saved with each checkpoint by ``jaxzoo.fit``).

::

    jaxzoo.data.write_array_shards("data/tokens", chunks, rows_per_shard=65536)   # once
    source = jaxzoo.data.ShardedArrays("data/tokens")                               # memory-mapped
    loader = jaxzoo.data.make_loader(source, batch_size=64, seed=0)                 # this process's part
    state, history = jaxzoo.fit(state, step, iter(loader), num_steps=..., workdir=..., mesh=mesh)

A shard folder holds ``index.json`` (fields, dtypes, row shapes, rows per shard) and one ``.npy`` file per
field and shard (``<field>/part-00000.npy``); rows are read through ``np.load(mmap_mode="r")``, so a corpus
larger than memory streams. ``make_loader`` draws a global permutation per epoch from ``seed`` (the same on
every process), gives process ``i`` of ``n`` every n-th record (``ShardByJaxProcess``), and batches
``batch_size // n`` rows per process, so the global batch assembled by ``jaxzoo.shard_batch`` on a mesh is
``batch_size`` rows on any number of processes.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import grain.python as grain
import jax
import numpy as np

INDEX = "index.json"
FORMAT = 1


def _as_fields(chunk: Any) -> dict[str, np.ndarray]:
    if isinstance(chunk, Mapping):
        return {str(k): np.asarray(v) for k, v in chunk.items()}
    return {"x": np.asarray(chunk)}


def write_array_shards(directory: str | pathlib.Path, chunks: Iterable[Any], *, rows_per_shard: int = 65536
                       ) -> ShardedArrays:
    """Write ``chunks`` (arrays [rows, ...] or dicts of them with equal row counts) as .npy shards.

    Rows are regrouped into shards of ``rows_per_shard`` (the last may be shorter). Every chunk must have
    the same fields, dtypes and row shapes as the first. Returns the ``ShardedArrays`` over the folder.
    """
    if not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be a positive int; got {rows_per_shard!r}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec: dict[str, tuple[str, tuple[int, ...]]] | None = None
    pending: dict[str, list[np.ndarray]] = {}
    pending_rows = 0
    shards: list[int] = []

    def flush(rows: int) -> None:
        nonlocal pending, pending_rows
        joined = {k: np.concatenate(v) for k, v in pending.items()}
        for name, arr in joined.items():
            (directory / name).mkdir(exist_ok=True)
            np.save(directory / name / f"part-{len(shards):05d}.npy", arr[:rows])
        shards.append(rows)
        pending = {k: [v[rows:]] for k, v in joined.items()}
        pending_rows -= rows

    for i, chunk in enumerate(chunks):
        fields = _as_fields(chunk)
        rows = {len(v) if v.ndim else -1 for v in fields.values()}
        if len(rows) != 1 or -1 in rows:
            raise ValueError(f"chunk {i}: every field needs the same leading (row) dimension; got "
                             f"{ {k: v.shape for k, v in fields.items()} }")
        got = {k: (v.dtype.str, v.shape[1:]) for k, v in fields.items()}
        if spec is None:
            spec = got
        elif got != spec:
            raise ValueError(f"chunk {i} has fields/dtypes/row shapes {got}; the first chunk had {spec}")
        for k, v in fields.items():
            pending.setdefault(k, []).append(v)
        pending_rows += rows.pop()
        while pending_rows >= rows_per_shard:
            flush(rows_per_shard)
    if spec is None:
        raise ValueError(f"write_array_shards got no chunks to write into {directory}")
    if pending_rows:
        flush(pending_rows)
    index = {"format": FORMAT, "shard_rows": shards,
             "fields": {k: {"dtype": d, "row_shape": list(s)} for k, (d, s) in spec.items()}}
    (directory / INDEX).write_text(json.dumps(index, indent=1))
    return ShardedArrays(directory)


class ShardedArrays:
    """A random-access source (grain's protocol: ``len`` and ``[i]``) over a folder written by
    ``write_array_shards``. ``source[i]`` is a dict of the i-th row of every field (the bare row when the
    only field is ``"x"``). Shards are memory-mapped on first use."""

    def __init__(self, directory: str | pathlib.Path):
        self.directory = pathlib.Path(directory)
        path = self.directory / INDEX
        if not path.is_file():
            raise ValueError(f"{self.directory} has no {INDEX}: expected a folder written by write_array_shards")
        try:
            index = json.loads(path.read_text())
            self.shard_rows = [int(r) for r in index["shard_rows"]]
            self.fields = {k: (np.dtype(v["dtype"]), tuple(v["row_shape"])) for k, v in index["fields"].items()}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is truncated or corrupt ({e})") from None
        if index.get("format") != FORMAT:
            raise ValueError(f"{path} has format {index.get('format')!r}; this code reads format {FORMAT}")
        self.offsets = np.cumsum([0] + self.shard_rows)
        for name, (dtype, row_shape) in self.fields.items():
            for s, rows in enumerate(self.shard_rows):
                f = self.directory / name / f"part-{s:05d}.npy"
                if not f.is_file():
                    raise ValueError(f"shard {f} is missing")
                try:
                    arr = np.load(f, mmap_mode="r")
                except ValueError as e:
                    raise ValueError(f"shard {f} is truncated or corrupt ({e})") from None
                if arr.shape != (rows, *row_shape) or arr.dtype != dtype:
                    raise ValueError(f"shard {f} holds {arr.dtype}{arr.shape}; the index says "
                                     f"{dtype}{(rows, *row_shape)} (truncated or rewritten?)")
        self._maps: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _shard(self, name: str, s: int) -> np.ndarray:
        key = (name, s)
        if key not in self._maps:
            self._maps[key] = np.load(self.directory / name / f"part-{s:05d}.npy", mmap_mode="r")
        return self._maps[key]

    def shards(self, name: str = "x") -> list[np.ndarray]:
        """Field ``name`` shard by shard: read-only memory maps [rows_s, *row_shape], in row order."""
        if name not in self.fields:
            raise ValueError(f"{self.directory} has no field {name!r}; its fields are {sorted(self.fields)}")
        return [self._shard(name, s) for s in range(len(self.shard_rows))]

    def field(self, name: str = "x") -> np.ndarray:
        """Field ``name`` over all rows as one array [len(self), *row_shape] (read into memory)."""
        parts = self.shards(name)
        dtype, row_shape = self.fields[name]
        return np.concatenate(parts) if parts else np.zeros((0, *row_shape), dtype)

    def __getitem__(self, i: int) -> Any:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"record {i} is outside [0, {len(self)})")
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        row = {name: np.array(self._shard(name, s)[i - self.offsets[s]]) for name in self.fields}
        return row["x"] if list(row) == ["x"] else row

    def __getstate__(self):  # worker processes reopen the memory maps
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def __repr__(self) -> str:
        return f"ShardedArrays({str(self.directory)!r}, rows={len(self)}, fields={list(self.fields)})"


def make_loader(
    source: Any,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_by_process: bool = True,
    drop_remainder: bool = True,
    operations: Iterable[Any] = (),
    worker_count: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DataLoader:
    """A grain ``DataLoader`` over ``source`` yielding this process's part of each global batch.

    ``batch_size`` is the global batch: each of the ``jax.process_count()`` processes gets
    ``batch_size // process_count`` rows (``ValueError`` when it does not divide). ``num_epochs=None``
    repeats forever. ``operations`` (grain transforms) run per record before batching. Deterministic given
    ``seed``; ``iter(loader)`` has ``get_state`` / ``set_state``, which ``jaxzoo.fit`` saves with every
    checkpoint. ``process_index`` / ``process_count`` override JAX's (to read one process's part elsewhere).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    n = (jax.process_count() if process_count is None else process_count) if shard_by_process else 1
    i = (jax.process_index() if process_index is None else process_index) if shard_by_process else 0
    if not 0 <= i < n:
        raise ValueError(f"process_index must lie in [0, {n}); got {i}")
    if batch_size % n:
        raise ValueError(f"global batch_size {batch_size} is not divisible by the {n} processes")
    if len(source) == 0:
        raise ValueError("the data source is empty: a pipeline needs at least one record")
    shard = grain.ShardOptions(shard_index=i, shard_count=n, drop_remainder=True)
    sampler = grain.IndexSampler(len(source), shard, shuffle=shuffle, num_epochs=num_epochs, seed=seed)
    ops = [*operations, grain.Batch(batch_size // n, drop_remainder=drop_remainder)]
    return grain.DataLoader(data_source=source, sampler=sampler, operations=ops, worker_count=worker_count)


def iterator_state(iterator: Any) -> bytes | None:
    """The resumable state of a grain iterator (None for iterators that have none)."""
    get = getattr(iterator, "get_state", None)
    return get() if callable(get) else None
