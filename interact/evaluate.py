"""Running a model on all 2^n masked inputs of one sample, and the scalar outputs v(x_S) it is read through.

Masking (the lab's convention): x_S = x on the positions of the players in S and the baseline b on the
positions of the other players; inputs that belong to no player keep their values.

Players are groups of positions over the leading `player_ndim` axes of x (flattened in C order): feature
indices for tabular x [F], token positions for embeddings [L, D] (player_ndim=1), pixel positions h*W+w
for images [H, W, C] (player_ndim=2). They can also be given as a bool array [n, *x.shape[:player_ndim]].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from interact.ops import check_num_players, harsanyi


def _check_label(label, num_classes: int, name: str) -> None:
    """A concrete label outside [0, C) raises; a traced one cannot be checked here (see log_odds)."""
    if isinstance(label, jax.core.Tracer):
        return
    lab = np.asarray(label)
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"{name} needs integer class labels; got dtype {lab.dtype}.")
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise ValueError(
            f"{name}: the label must be a class index in [0, {num_classes}); got {lab.min() if lab.min() < 0 else lab.max()}."
        )


def log_odds(logits: jax.Array, label: int | jax.Array) -> jax.Array:
    """log p_y / (1 - p_y) from logits [..., C], stably: z_y - logsumexp_{c != y} z_c.  -> [...].

    A label outside [0, C) raises ValueError when it is a concrete value; under jit (a traced label) the
    output is NaN instead, which `evaluate_subsets` reports as a ValueError.
    """
    logits = jnp.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"log_odds needs logits [..., C] with C >= 2 classes; got shape {logits.shape}.")
    num = logits.shape[-1]
    _check_label(label, num, "log_odds")
    label = jnp.asarray(label)
    valid = (label >= 0) & (label < num)
    safe = jnp.where(valid, label, 0)
    classes = jnp.arange(num)
    z_y = jnp.take_along_axis(logits, jnp.broadcast_to(safe, logits.shape[:-1])[..., None], axis=-1)[..., 0]
    others = jnp.where(classes == safe[..., None], -jnp.inf, logits)
    return jnp.where(valid, z_y - jax.nn.logsumexp(others, axis=-1), jnp.nan)


def logit(logits: jax.Array, label: int | jax.Array) -> jax.Array:
    """The raw logit z_y of class `label` from logits [..., C] -> [...]; for a single-logit binary model
    pass label 0 (and negate it for the negative class)."""
    logits = jnp.asarray(logits)
    if logits.ndim < 1:
        raise ValueError(f"logit needs logits [..., C]; got a scalar of shape {logits.shape}.")
    num = logits.shape[-1]
    _check_label(label, num, "logit")
    label = jnp.asarray(label)
    valid = (label >= 0) & (label < num)
    idx = jnp.broadcast_to(jnp.where(valid, label, 0), logits.shape[:-1])[..., None]
    return jnp.where(valid, jnp.take_along_axis(logits, idx, axis=-1)[..., 0], jnp.nan)


def player_matrix(players, x_shape: tuple[int, ...], player_ndim: int = 1) -> np.ndarray:
    """Bool [n, P] membership of the P = prod(x_shape[:player_ndim]) positions; checks overlap and range."""
    if not 1 <= player_ndim <= len(x_shape):
        raise ValueError(
            f"player_ndim must be between 1 and x.ndim = {len(x_shape)} (players index the leading axes of x); "
            f"got {player_ndim}."
        )
    grid = tuple(x_shape[:player_ndim])
    num_pos = int(np.prod(grid))
    arr = players if isinstance(players, np.ndarray | jax.Array) else None
    if arr is not None and arr.dtype == bool:
        arr = np.asarray(arr)
        if arr.shape[1:] != grid:
            raise ValueError(
                f"A bool player array must have shape [n, *x.shape[:player_ndim]] = [n, {', '.join(map(str, grid))}]; "
                f"got {arr.shape}."
            )
        member = arr.reshape(arr.shape[0], num_pos)
        empty = np.nonzero(~member.any(axis=1))[0]
        if empty.size:
            raise ValueError(
                f"Every player must own at least one position; player {int(empty[0])} owns none."
            )
    else:
        if isinstance(players, np.ndarray | jax.Array):
            players = np.asarray(players).tolist()
        if not isinstance(players, Sequence) or isinstance(players, str):
            raise ValueError(
                f"players must be a sequence of index groups or a bool array; got {type(players)}."
            )
        member = np.zeros((len(players), num_pos), dtype=bool)
        for i, group in enumerate(players):
            idx = np.atleast_1d(np.asarray(group))
            if idx.size == 0:
                raise ValueError(
                    f"Every player must own at least one position; player {i} is an empty group."
                )
            if not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"Player {i} must be a group of integer positions; got {group!r}.")
            if idx.min() < 0 or idx.max() >= num_pos:
                raise ValueError(
                    f"Player {i} indexes position {int(idx.max() if idx.max() >= num_pos else idx.min())}, "
                    f"outside x, whose leading {player_ndim} axes {grid} hold {num_pos} positions."
                )
            if len(np.unique(idx)) != idx.size:
                raise ValueError(f"Player {i} lists a position twice: {idx.tolist()}.")
            member[i, idx] = True
    check_num_players(member.shape[0])
    counts = member.sum(axis=0)
    if (counts > 1).any():
        pos = int(np.argmax(counts > 1))
        owners = np.nonzero(member[:, pos])[0].tolist()
        raise ValueError(f"Players must not overlap; position {pos} belongs to players {owners}.")
    return member


def masked_input(
    x: jax.Array, baseline: jax.Array, member: jax.Array, subset: jax.Array, player_ndim: int = 1
) -> jax.Array:
    """x_S for one subset index: x on the positions of players in S, baseline on the other players'.

    member: bool [n, P] from `player_matrix`, P = prod(x.shape[:player_ndim]); subset: int scalar.
    Returns an array shaped like x.
    """
    n = member.shape[0]
    present = (subset >> jnp.arange(n, dtype=jnp.asarray(subset).dtype)) & 1  # [n]
    keep = jnp.any(member & (present[:, None] == 1), axis=0)  # [P] positions of players in S
    use_x = keep | ~jnp.any(member, axis=0)  # non-player positions keep x
    grid = (*x.shape[:player_ndim], *([1] * (x.ndim - player_ndim)))
    return jnp.where(use_x.reshape(grid), x, baseline)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    return int(batch_size)


def _check_inputs(x, baseline, players, player_ndim):
    x = jnp.asarray(x)
    baseline = jnp.asarray(baseline, dtype=x.dtype)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis that players index; got a scalar.")
    if baseline.shape != x.shape:
        raise ValueError(f"The baseline must have the same shape as x, {x.shape}; got {baseline.shape}.")
    member = player_matrix(players, x.shape, player_ndim)
    return x, baseline, member


def subset_values(
    fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    baseline: jax.Array,
    players,
    *,
    batch_size: int = 256,
    player_ndim: int = 1,
    fn_args: tuple = (),
) -> jax.Array:
    """v [2^n] = fn(x_S, *fn_args) for every subset, as a differentiable traceable function (no sharding).

    Use this inside `jax.grad` (e.g. to learn a baseline); `evaluate_subsets` is the streaming, sharded
    entry point. Memory is bounded by `batch_size` masked inputs at a time (`lax.map`).
    """
    x, baseline, member = _check_inputs(x, baseline, players, player_ndim)
    subsets = jnp.arange(2 ** member.shape[0], dtype=jnp.int32)
    return _values(fn, x, baseline, jnp.asarray(member), subsets, batch_size, player_ndim, fn_args)


def _values(fn, x, baseline, member, subsets, batch_size, player_ndim, fn_args=()):
    def one(s):
        out = jnp.asarray(fn(masked_input(x, baseline, member, s, player_ndim), *fn_args))
        if out.shape != ():
            raise ValueError(f"fn must map one masked input to a scalar; it returned shape {out.shape}.")
        return out

    return jax.lax.map(one, subsets, batch_size=min(batch_size, subsets.shape[0]))


@partial(jax.jit, static_argnums=(0, 5, 6))
def _run(fn, x, baseline, member, subsets, batch_size, player_ndim, fn_args):
    return _values(fn, x, baseline, member, subsets, batch_size, player_ndim, fn_args)


@partial(jax.jit, static_argnums=(0, 5, 6, 7, 8))
def _run_sharded(fn, x, baseline, member, subsets, local, player_ndim, mesh, axis, fn_args):
    body = jax.shard_map(
        lambda x, b, m, s, a: _values(fn, x, b, m, s, local, player_ndim, a),
        mesh=mesh,
        in_specs=(P(), P(), P(), P(axis), P()),
        out_specs=P(axis),
    )
    return body(x, baseline, member, subsets, fn_args)


def evaluate_subsets(
    fn: Callable[..., jax.Array],
    x: jax.Array,
    baseline: jax.Array,
    players,
    *,
    batch_size: int = 256,
    player_ndim: int = 1,
    mesh: Mesh | None = None,
    axis: str | tuple[str, ...] = "data",
    fn_args: tuple = (),
) -> jax.Array:
    """v [2^n]: the scalar output fn(x_S, *fn_args) for every subset S of the players, in subset-index order.

    fn maps one input shaped like x (and the pytree `fn_args`, e.g. params and label) to a scalar, e.g.
    `lambda xs, p, y: log_odds(model.apply(p, xs), y)`. fn is a static argument of the compiled program:
    pass the same function object and put what changes between calls in fn_args to avoid recompiling. It is
    vmapped over `batch_size` masked inputs at a time inside one jitted `lax.map`, so memory stays bounded
    by the batch. With a mesh (Auto or Explicit axes, e.g. `jax.make_mesh`), the 2^n subsets are split over
    the devices along `axis` (each device streams its share in batches of batch_size / devices); v comes
    back sharded the same way when 2^n fills whole batches on every device, else replicated; the values
    equal the single-device run.

    fn must be a JAX function (it is traced). For a host model (scikit-learn `predict_proba`, torch, numpy)
    use `evaluate_subsets_host`. NaN or infinite outputs raise ValueError (after the run: one host sync).
    """
    x, baseline, member = _check_inputs(x, baseline, players, player_ndim)
    batch_size = _check_batch_size(batch_size)
    num = 2 ** member.shape[0]
    member = jnp.asarray(member)
    if mesh is None:
        subsets = jnp.arange(num, dtype=jnp.int32)
        return _checked(_traced(_run, fn, x, baseline, member, subsets, batch_size, player_ndim, fn_args))
    shards = int(np.prod([mesh.shape[a] for a in ((axis,) if isinstance(axis, str) else axis)]))
    local = max(1, min(batch_size // shards, -(-num // shards)))
    padded = -(-num // (shards * local)) * shards * local  # every device runs whole batches
    subsets = jnp.arange(padded, dtype=jnp.int32) % num  # padding re-evaluates valid subsets, then is cut
    subsets = jax.device_put(subsets, NamedSharding(mesh, P(axis)))
    x, baseline, member, fn_args = _onto_mesh(mesh, (x, baseline, member, fn_args))
    v = _traced(_run_sharded, fn, x, baseline, member, subsets, local, player_ndim, mesh, axis, fn_args)
    if padded != num:
        # Cut the padding from a replicated copy: slicing a sharded array is ambiguous on a mesh with Explicit
        # axes (the default of jax.make_mesh) and raises a ShardingTypeError there.
        v = jax.device_put(v, NamedSharding(mesh, P()))[:num]
    return _checked(v)


def _traced(run, fn, *args):
    """run(fn, *args), turning JAX's generic error for a host (numpy) model into a sentence."""
    try:
        return run(fn, *args)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as e:
        raise ValueError(
            "fn is traced by JAX (jit, lax.map, grad), so it must be written with jax.numpy; a host function "
            "such as a scikit-learn predict_proba cannot be called on traced values. Use "
            "`evaluate_subsets_host(fn, x, baseline, players)` instead (it calls fn on numpy batches), or build "
            "the masked inputs with `masked_inputs_host` / `subset_masks`, run your model, and pass the values "
            f"to `harsanyi`. (JAX said: {type(e).__name__}.)"
        ) from e


def _checked(v: jax.Array) -> jax.Array:
    bad = ~np.isfinite(np.asarray(v))
    if bad.any():
        raise ValueError(
            f"fn returned NaN or infinite values on {int(bad.sum())} of the {bad.size} masked inputs (first at "
            f"subset index {int(np.argmax(bad))}); interactions of non-finite outputs are meaningless. Check the "
            "model, the baseline and the label (a label outside the classes gives NaN in log_odds under jit)."
        )
    return v


def masked_inputs_host(x, baseline, players, subsets=None, *, player_ndim: int = 1) -> np.ndarray:
    """The masked inputs x_S as one numpy array [m, *x.shape], for host (non-JAX) models.

    subsets: subset indices [m] (default: all 2^n, in subset-index order). Same masking as `masked_input`.
    """
    x, baseline, member = (np.asarray(a) for a in _check_inputs(x, baseline, players, player_ndim))
    n = member.shape[0]
    subsets = np.arange(2**n) if subsets is None else np.asarray(subsets, np.int64)
    present = ((subsets[:, None] >> np.arange(n)) & 1).astype(bool)  # [m, n]
    keep = (present.astype(np.int64) @ member.astype(np.int64)) > 0  # [m, P]
    keep |= ~member.any(axis=0)
    grid = (len(subsets), *x.shape[:player_ndim], *([1] * (x.ndim - player_ndim)))
    return np.where(keep.reshape(grid), x, baseline)


def evaluate_subsets_host(
    fn: Callable[..., np.ndarray],
    x,
    baseline,
    players,
    *,
    batch_size: int = 256,
    player_ndim: int = 1,
    fn_args: tuple = (),
) -> np.ndarray:
    """v [2^n] for a host (non-JAX) model: fn(batch [B, *x.shape], *fn_args) -> [B] scalar outputs per input.

    For scikit-learn, torch or any numpy model, e.g. `lambda xs: np.log(m.predict_proba(xs)[:, y])`. The
    masked inputs are built with numpy, `batch_size` at a time; nothing is traced. Returns float64 numpy.
    """
    batch_size = _check_batch_size(batch_size)
    _, _, member = _check_inputs(x, baseline, players, player_ndim)
    num = 2 ** member.shape[0]
    out = []
    for start in range(0, num, batch_size):
        xs = masked_inputs_host(x, baseline, players, np.arange(start, min(num, start + batch_size)),
                                player_ndim=player_ndim)  # fmt: skip
        vals = np.asarray(fn(xs, *fn_args), np.float64).reshape(-1)
        if vals.shape != (len(xs),):
            raise ValueError(
                f"fn must map a batch of {len(xs)} masked inputs to {len(xs)} scalars; it returned {vals.size}."
            )
        out.append(vals)
    return np.asarray(_checked(np.concatenate(out)))


def _onto_mesh(mesh: Mesh, tree):
    """Arrays already spread over the mesh's devices stay as they are (jit reshards them as needed);
    everything else (host arrays, arrays committed to one device) is replicated onto the mesh."""
    devices = set(mesh.devices.flat)

    def put(a):
        if isinstance(a, jax.Array) and set(a.sharding.device_set) == devices:
            return a
        return jax.device_put(a, NamedSharding(mesh, P()))

    return jax.tree.map(put, tree)


def interactions_of(
    fn: Callable[[jax.Array], jax.Array], x: jax.Array, baseline: jax.Array, players, **kwargs
) -> jax.Array:
    """Shortcut: the AND interactions `harsanyi(evaluate_subsets(fn, x, baseline, players, ...))`."""
    return harsanyi(evaluate_subsets(fn, x, baseline, players, **kwargs))
