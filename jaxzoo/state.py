"""The state planner: one way to build, shard, restore and rebuild a training state.

In the spirit of MaxText's ``setup_initial_state`` and big_vision's ``train.py``:

1. build the abstract state (``TrainState`` of parameters, optimizer state and ``extra`` collections) with
   ``jax.eval_shape`` of the init function, no memory spent;
2. derive every leaf's sharding: parameters from their logical axis names and the rules, every optimizer
   leaf that mirrors a parameter (Adam's moments, an EMA) from that parameter, counts and scalars
   replicated; with ``zero1=True`` the mirrored optimizer leaves are further split over the data axis
   where a dimension divides (ZeRO-1);
3. restore the latest checkpoint of ``workdir`` into those shardings if there is one, else initialise
   directly under ``jax.jit(out_shardings=...)``, so no device ever holds an unsharded copy.

::

    plan = jaxzoo.plan_state(jaxzoo.module_init(model, x), tx, jax.random.key(0), mesh=mesh)
    step = jaxzoo.make_train_step(loss_fn, tx, mesh=mesh, state_sharding=plan.shardings)
    state, history = jaxzoo.fit(plan.state, step, batches, num_steps=1000, rng=rng, workdir=workdir)

``rebuild(workdir)`` goes the other way: from a work directory alone (its ``config.json`` and latest
checkpoint) back to the config, the model, the parameters and the optimizer state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from jaxzoo.checkpoint import Checkpointer
from jaxzoo.config import check_resume_config, load_config
from jaxzoo.sharding import DEFAULT_RULES, Rules, logical_shardings, replicated, rules_for_mesh
from jaxzoo.train import TrainState

CHECKPOINTS = "checkpoints"


def module_init(module: nn.Module, *sample: Any, method: Any = None, collection: str | None = "params",
                **kwargs: Any) -> Callable[[jax.Array], Any]:
    """An init function ``rng -> variables[collection]`` (all collections if ``collection`` is None) for
    ``plan_state``, from a Linen module and sample inputs (their shapes are what matters)."""

    def init(rng):
        variables = module.init(rng, *sample, method=method, **kwargs)
        return variables if collection is None else variables[collection]

    return init


@dataclasses.dataclass
class StatePlan:
    """What ``plan_state`` returns: the state, its shardings, its abstract shape and where it came from."""

    state: TrainState | None  # the state, initialised or restored, placed with ``shardings`` (None: abstract_only)
    shardings: Any  # TrainState of NamedSharding (None leaves without a mesh)
    abstract: Any  # TrainState of ShapeDtypeStruct (with shardings)
    restored_step: int | None  # the checkpoint step restored from, None when initialised

    def memory(self) -> dict[str, int]:
        """Bytes per device of params, optimizer state and extra (see ``bytes_per_device``)."""
        return bytes_per_device(self.abstract, self.shardings)


def _with_data_axis(sharding: NamedSharding, shape: tuple[int, ...], axis: str) -> NamedSharding:
    """``sharding`` with ``axis`` added to the first unsharded dimension that its size divides (ZeRO-1)."""
    if axis not in sharding.mesh.shape or sharding.mesh.shape[axis] == 1:
        return sharding
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    used = {a for entry in spec if entry is not None for a in ((entry,) if isinstance(entry, str) else entry)}
    if axis in used:
        return sharding
    size = sharding.mesh.shape[axis]
    for dim, entry in enumerate(spec):
        if entry is None and shape[dim] % size == 0 and shape[dim] >= size:
            spec[dim] = axis
            return NamedSharding(sharding.mesh, PartitionSpec(*spec))
    return sharding


def _key(entry: Any) -> tuple:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return (attr, getattr(entry, attr))
    return ("?", str(entry))


def _mirror_shardings(opt_abstract: Any, params: Any, param_shardings: Any, default: NamedSharding) -> Any:
    """Each optimizer leaf whose key path ends with a parameter's key path and has its shape takes that
    parameter's sharding; every other leaf (counts, scalars) gets ``default``.

    Matching by path suffix works for any optax state layout: plain chains, ``optax.masked`` and
    ``optax.multi_transform`` (whose inner states hold ``MaskedNode`` where a parameter is left out), EMA
    copies, and package transforms, without asking each transform how it maps its state.
    """
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_s = jax.tree.leaves(param_shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    index = {tuple(_key(k) for k in path): (tuple(leaf.shape), sh) for (path, leaf), sh in zip(flat_p, flat_s)}

    def pick(path, leaf):
        keys = tuple(_key(k) for k in path)
        for start in range(len(keys)):
            hit = index.get(keys[start:])
            if hit is not None and hit[0] == tuple(getattr(leaf, "shape", ())):
                return hit[1]
        return default

    return jax.tree_util.tree_map_with_path(pick, opt_abstract)


def state_shardings(
    abstract_params: Any,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    rules: Rules = DEFAULT_RULES,
    extra: Any = None,
    zero1: bool = False,
    data_axis: str = "data",
) -> TrainState:
    """Shardings of a ``TrainState`` from boxed abstract params (``jax.eval_shape`` of an init function).

    Params take the shardings of their logical names; each optimizer leaf that mirrors a parameter takes
    that parameter's sharding (plus ``data_axis`` on a divisible free dimension with ``zero1``); other
    optimizer leaves (counts) are replicated; ``extra`` leaves boxed with logical names are sharded by them,
    the rest replicated.
    """
    rep = replicated(mesh)
    param_sh = logical_shardings(abstract_params, mesh, rules)
    params = nn.meta.unbox(abstract_params)
    opt_abstract = jax.eval_shape(tx.init, params)
    opt_params_sh = param_sh
    if zero1:
        opt_params_sh = jax.tree.map(lambda s, p: _with_data_axis(s, p.shape, data_axis), param_sh, params)
    opt_sh = _mirror_shardings(opt_abstract, params, opt_params_sh, rep)
    if extra is None:
        extra_sh = {}
    elif any(isinstance(x, nn.LogicallyPartitioned) for x in
             jax.tree.leaves(extra, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))):
        extra_sh = logical_shardings(extra, mesh, rules)
    else:
        extra_sh = jax.tree.map(lambda _: rep, extra)
    return TrainState(step=rep, params=param_sh, opt_state=opt_sh, extra=extra_sh)


def plan_state(
    init_fn: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    rng: jax.Array,
    *,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    params: Any = None,
    extra: Any = None,
    workdir: str | pathlib.Path | None = None,
    config: Any = None,
    allow_config_change: bool = False,
    zero1: bool = False,
    require_checkpoint: bool = False,
    abstract_only: bool = False,
) -> StatePlan:
    """Plan, then restore or initialise, a ``TrainState``.

    Args:
      init_fn: ``rng -> params`` with logically boxed leaves (``nn.with_logical_partitioning``); e.g.
        ``module_init(model, *sample)``. Evaluated abstractly for shapes and names, and run (sharded) only
        when neither ``params`` nor a checkpoint is given.
      tx: the optax optimizer.
      rng: key of the initialisation.
      mesh, rules: where and how to shard; without a mesh everything lives on the default device.
      params: concrete parameters to start from instead of ``init_fn`` (pretrained weights); they must
        have ``init_fn``'s structure and shapes.
      extra: mutable collections the loss updates (a pytree of arrays, or ``rng -> pytree``).
      workdir: restore the latest checkpoint of ``workdir/checkpoints`` when there is one.
      config: the run's config; when restoring, it must equal ``workdir/config.json`` unless
        ``allow_config_change`` (resuming with another config silently mixes two runs).
      zero1: shard mirrored optimizer leaves over the data axis too (ZeRO-1).
      require_checkpoint: raise ``FileNotFoundError`` when ``workdir`` holds no checkpoint.
      abstract_only: plan without allocating anything (``state`` is None): shardings, shapes and
        ``memory()`` of a model too large for this machine.
    """
    if not callable(init_fn):
        raise ValueError(f"plan_state needs an init function rng -> params; got {type(init_fn).__name__}")
    active_rules = rules_for_mesh(rules, mesh) if mesh is not None else rules

    def boxed(r):
        with nn.logical_axis_rules(active_rules):
            return init_fn(r)

    def make_extra(r):
        return extra(r) if callable(extra) else extra

    ctx = jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
    with ctx:
        abstract_params = jax.eval_shape(boxed, rng)
        abstract_extra = jax.eval_shape(make_extra, rng) if extra is not None else None
        if params is not None:
            _check_same_tree(nn.meta.unbox(abstract_params), params)
        if mesh is not None:
            shardings = state_shardings(abstract_params, tx, mesh, rules=active_rules, extra=abstract_extra,
                                        zero1=zero1)
        else:
            shardings = None

        def build(r, p):
            p = nn.meta.unbox(boxed(r)) if p is None else p
            e = nn.meta.unbox(make_extra(r)) if extra is not None else {}
            return TrainState.create(p, tx, e)

        abstract = jax.eval_shape(build, rng, params)
        if shardings is not None:
            abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                    abstract, shardings)

        if abstract_only:
            return StatePlan(state=None, shardings=shardings, abstract=abstract, restored_step=None)
        restored_step = None
        ckpt_dir = pathlib.Path(workdir) / CHECKPOINTS if workdir is not None else None
        if ckpt_dir is not None and ckpt_dir.is_dir():
            ckpt = Checkpointer(ckpt_dir)
            restored_step = ckpt.latest_step()
            if restored_step is not None:
                check_resume_config(workdir, config, allow_config_change)
                target = abstract if shardings is not None else jax.tree.map(_on_default_device, abstract)
                state = ckpt.restore(target, restored_step)
            ckpt.close()
        if restored_step is None:
            if require_checkpoint:
                raise FileNotFoundError(f"no checkpoint in {ckpt_dir}: nothing to rebuild from")
            if params is not None and shardings is not None:
                params = jax.device_put(params, shardings.params)
            state = jax.jit(build, out_shardings=shardings)(rng, params)
    return StatePlan(state=state, shardings=shardings, abstract=abstract, restored_step=restored_step)


def _on_default_device(a: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=SingleDeviceSharding(jax.devices()[0]))


def _check_same_tree(abstract: Any, params: Any) -> None:
    want = jax.tree_util.tree_flatten_with_path(abstract)[0]
    have = jax.tree_util.tree_flatten_with_path(params)[0]
    want_d = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in want}
    have_d = {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in have}
    for key in sorted(set(want_d) | set(have_d)):
        if key not in have_d:
            raise ValueError(f"params lack {key} (shape {want_d[key]}) that the model's init creates")
        if key not in want_d:
            raise ValueError(f"params have {key}, which the model's init does not create")
        if want_d[key] != have_d[key]:
            raise ValueError(f"params{key} has shape {have_d[key]}; the model expects {want_d[key]}")


def bytes_per_device(abstract: Any, shardings: Any = None) -> dict[str, int]:
    """Bytes each device holds of a state's ``params``, ``opt_state`` and ``extra`` (the largest shard).

    ``abstract`` is a TrainState of arrays or ShapeDtypeStructs; ``shardings`` the matching NamedShardings
    (None: everything on one device).
    """

    def leaf_bytes(a, s):
        n = math.prod(a.shape) * np.dtype(a.dtype).itemsize
        if s is None or not isinstance(s, NamedSharding):
            return n
        split = 1
        for dim, entry in enumerate(s.spec):
            if entry is None or dim >= len(a.shape):
                continue
            for axis in (entry,) if isinstance(entry, str) else entry:
                split *= s.mesh.shape[axis]
        return n // split

    out = {}
    for part in ("params", "opt_state", "extra"):
        tree = getattr(abstract, part)
        sh = getattr(shardings, part) if shardings is not None else jax.tree.map(lambda _: None, tree)
        leaves = jax.tree.leaves(tree)
        sh_leaves = jax.tree.leaves(sh, is_leaf=lambda x: x is None or isinstance(x, NamedSharding))
        if len(sh_leaves) != len(leaves):
            sh_leaves = [None] * len(leaves)
        out[part] = int(sum(leaf_bytes(a, s) for a, s in zip(leaves, sh_leaves)))
    return out


class Recipe(NamedTuple):
    """What a run config builds for ``rebuild``: its model, init function, optimizer and rules."""

    model: Any  # the Linen module (or a tuple of them)
    init_fn: Callable[[jax.Array], Any]  # rng -> boxed params
    tx: optax.GradientTransformation
    rules: Rules = DEFAULT_RULES
    extra: Any = None  # extra collections (pytree or rng -> pytree), as given to plan_state


class Run(NamedTuple):
    """A run rebuilt from its work directory."""

    config: Any
    model: Any
    state: TrainState
    shardings: Any
    step: int


def rebuild(workdir: str | pathlib.Path, *, mesh: Mesh | None = None, zero1: bool = False) -> Run:
    """Config + latest checkpoint of ``workdir`` -> model, parameters and optimizer state.

    ``workdir/config.json`` must hold a run config (a ``jaxzoo.Config`` written by ``fit``) with a
    ``recipe()`` method returning a ``Recipe``; every package's train config has one.
    """
    config = load_config(workdir)
    if not hasattr(config, "recipe"):
        raise ValueError(
            f"{workdir}/config.json holds a {type(config).__name__}, which has no recipe(): save the package's "
            "run config (e.g. jrt.RunConfig) with fit(config=...) to make a work directory rebuildable"
        )
    recipe = config.recipe()
    plan = plan_state(recipe.init_fn, recipe.tx, jax.random.key(0), mesh=mesh, rules=recipe.rules,
                      extra=recipe.extra, workdir=workdir, zero1=zero1, require_checkpoint=True)
    return Run(config, recipe.model, plan.state, plan.shardings, plan.restored_step)
