"""Meshes and logical-axis sharding.

Models name their parameter and activation axes logically (``"embed"``, ``"mlp"``, ``"batch"``) with
``nn.with_logical_partitioning`` / ``nn.with_logical_constraint``; a rule table maps each logical name to
a mesh axis (or to ``None``: replicated). Changing the parallelism is then a change of mesh shape and
rules, never of model code.

Typical use::

    mesh = make_mesh({"data": -1, "model": 2})
    variables, shardings = init_sharded(model, jax.random.key(0), x, mesh=mesh)
    batch = shard_batch(batch, mesh)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# The one vocabulary of logical axis names. Every parameter and activation axis of every package is named
# from this table (a test checks it), so one rule table shards them all.
AXES: dict[str, str] = {
    "batch": "examples of a batch (data parallel)",
    "length": "sequence positions: tokens, or frames x patches of a video (sequence parallel when mapped)",
    "embed": "model width: the residual stream, norm scales, embedding rows",
    "mlp": "hidden units of a feed-forward block",
    "heads": "attention heads",
    "head_dim": "features of one attention head (also the q/k feature dim of linear attention)",
    "vocab": "vocabulary entries (embedding table, LM head)",
    "latent": "dictionary latents of a sparse autoencoder",
    "conv_in": "input channels of a convolution (or of a per-channel conv kernel)",
    "conv_out": "output channels of a convolution",
    "kernel": "spatial or temporal taps of a convolution kernel",
    "out": "a small output projection (ColBERT's dim, class logits, a caption/motion width)",
    "layers": "stacked layers of an nn.scan",
}

# Logical axis name -> mesh axis. Names not listed are replicated. Packages extend this with
# `extend_rules` (e.g. ("length", "model") for sequence parallelism).
DEFAULT_RULES: Rules = (
    ("batch", "data"),
    ("mlp", "model"),
    ("heads", "model"),
    ("vocab", "model"),
    ("latent", "model"),
    ("embed", None),
    ("length", None),
)


def check_axis_names(tree: Any) -> set[str]:
    """The logical axis names used in a tree of boxed variables; ``ValueError`` for a name not in ``AXES``."""
    names: set[str] = set()
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)):
        if isinstance(leaf, nn.LogicallyPartitioned):
            names.update(n for n in leaf.names if n is not None)
    unknown = sorted(names - set(AXES))
    if unknown:
        raise ValueError(f"logical axis names {unknown} are not in jaxzoo.AXES {sorted(AXES)}")
    return names


def extend_rules(*pairs: tuple[str, str | tuple[str, ...] | None], base: Rules = DEFAULT_RULES) -> Rules:
    """Return ``base`` with ``pairs`` added; a pair whose logical name is already in ``base`` replaces it."""
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ValueError(f"each rule must be a (logical_name, mesh_axis) pair; got {pair!r}")
        if pair[0] not in AXES:
            raise ValueError(f"rule for {pair[0]!r}: not a logical axis name of jaxzoo.AXES {sorted(AXES)}")
    names = {name for name, _ in pairs}
    return tuple(pairs) + tuple(rule for rule in base if rule[0] not in names)


def make_mesh(shape: Mapping[str, int] | str, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Build a mesh from ``{"axis": size}`` (or ``"data=-1,model=2"``); at most one size may be -1, meaning
    "all remaining devices". The devices are all processes' devices (``jax.devices()``).

    Axis types are always ``Auto``: Linen's logical constraints go through ``with_sharding_constraint``,
    which expects an Auto mesh (newer ``jax.make_mesh`` defaults to Explicit axes).
    """
    if isinstance(shape, str):
        from jaxzoo.script import parse_mesh

        shape = parse_mesh(shape)
    devices = list(jax.devices() if devices is None else devices)
    if not shape:
        raise ValueError("make_mesh needs at least one axis, e.g. {'data': -1}; got an empty mapping")
    names = tuple(shape)
    sizes = [int(s) for s in shape.values()]
    if sum(s == -1 for s in sizes) > 1:
        raise ValueError(f"at most one mesh axis may be -1 (the remaining devices); got {dict(shape)}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive or -1; got {dict(shape)}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"mesh {dict(shape)} needs a device count divisible by {known}; {len(devices)} devices are available"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    total = math.prod(sizes)
    if total > len(devices):
        raise ValueError(
            f"mesh {dict(zip(names, sizes))} needs {total} devices; only {len(devices)} are available"
        )
    grid = np.asarray(devices[:total], dtype=object).reshape(sizes)
    return Mesh(grid, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that puts a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def rules_for_mesh(rules: Rules, mesh: Mesh) -> Rules:
    """``rules`` with mesh axes that ``mesh`` lacks mapped to ``None`` (replicated), so one rule table
    serves a data-only mesh as well as a (data, model) one."""

    def keep(axes):
        if axes is None:
            return None
        kept = tuple(a for a in ((axes,) if isinstance(axes, str) else axes) if a in mesh.shape)
        return None if not kept else kept[0] if len(kept) == 1 else kept

    return tuple((name, keep(axes)) for name, axes in rules)


def logical_shardings(tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedShardings for a tree of (possibly abstract) variables boxed in ``nn.LogicallyPartitioned``.

    Leaves without logical names are replicated. Raises ``ValueError`` when a dimension is not divisible
    by the size of the mesh axes it is mapped to.
    """
    specs = nn.get_partition_spec(tree)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules_for_mesh(rules, mesh))
    unboxed = nn.meta.unbox(tree)
    flat_x, _ = jax.tree_util.tree_flatten_with_path(unboxed)
    flat_s = jax.tree_util.tree_leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
    for (path, leaf), sharding in zip(flat_x, flat_s):
        _check_divisible(jax.tree_util.keystr(path), np.shape(leaf), sharding)
    return shardings


def _check_divisible(name: str, shape: tuple[int, ...], sharding: NamedSharding) -> None:
    for dim, axes in enumerate(sharding.spec):
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        size = math.prod(sharding.mesh.shape[a] for a in axes)
        if dim >= len(shape) or shape[dim] % size:
            raise ValueError(
                f"{name}: dimension {dim} of shape {tuple(shape)} is not divisible by mesh axes {axes} "
                f"of total size {size}; change the mesh shape or the logical-axis rules"
            )


def init_sharded(
    module: nn.Module,
    rngs: Any,
    *args: Any,
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
    method: Any = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """Initialise ``module`` directly sharded on ``mesh``; returns ``(variables, shardings)``.

    The variables are created inside ``jax.jit(..., out_shardings=...)``, so no device ever holds the
    whole unsharded tree. Logical boxes are removed: ``variables`` holds plain arrays and ``shardings``
    the matching tree of ``NamedSharding``.
    """

    rules = rules_for_mesh(rules, mesh)

    def init(rngs, *args):
        with nn.logical_axis_rules(rules):
            return module.init(rngs, *args, method=method, **kwargs)

    with jax.set_mesh(mesh):
        abstract = jax.eval_shape(init, rngs, *args)
        shardings = logical_shardings(abstract, mesh, rules)
        variables = jax.jit(lambda r, *a: nn.meta.unbox(init(r, *a)), out_shardings=shardings)(rngs, *args)
    return variables, shardings


def batch_sharding(mesh: Mesh, ndim: int, axis: str = "data") -> NamedSharding:
    """Sharding of an ``ndim``-dimensional array split along its leading dimension over ``axis``."""
    if axis not in mesh.shape:
        raise ValueError(
            f"mesh has axes {tuple(mesh.shape)}; there is no axis {axis!r} to shard the batch over"
        )
    return NamedSharding(mesh, PartitionSpec(axis, *([None] * (ndim - 1))))


def shard_batch(batch: Any, mesh: Mesh, axis: str = "data") -> Any:
    """Place every array of ``batch`` on ``mesh``, split along its leading (batch) dimension over ``axis``.

    In a multi-process run each process passes its own rows (``jaxzoo.data.make_loader`` gives each its
    part) and gets the global array of all processes' rows, in process order
    (``jax.make_array_from_process_local_data``). Scalars are replicated. Raises ``ValueError`` when the
    global leading dimension is not divisible by the size of ``axis`` (we never pad or drop examples
    silently), or when the processes' rows cannot split evenly.
    """
    size = mesh.shape[axis] if axis in mesh.shape else None
    if size is None:
        raise ValueError(
            f"mesh has axes {tuple(mesh.shape)}; there is no axis {axis!r} to shard the batch over"
        )
    processes = jax.process_count()

    def place(path, x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.ndim == 0:
            return jax.device_put(x, replicated(mesh))
        rows = x.shape[0] * processes
        if rows % size:
            raise ValueError(
                f"batch entry {jax.tree_util.keystr(path) or 'array'} has leading dimension {rows}"
                + (f" ({x.shape[0]} rows on each of {processes} processes)" if processes > 1 else "")
                + f", which is not divisible by the {size} devices of mesh axis {axis!r}"
            )
        sharding = batch_sharding(mesh, x.ndim, axis)
        if processes == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(x), (rows, *x.shape[1:]))

    return jax.tree_util.tree_map_with_path(place, batch)
