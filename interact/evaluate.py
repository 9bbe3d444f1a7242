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


def log_odds(logits: jax.Array, label: int | jax.Array) -> jax.Array:
    """log p_y / (1 - p_y) from logits [..., C], stably: z_y - logsumexp_{c != y} z_c.  -> [...]."""
    logits = jnp.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] < 2:
        raise ValueError(f"log_odds needs logits [..., C] with C >= 2 classes; got shape {logits.shape}.")
    classes = jnp.arange(logits.shape[-1])
    z_y = jnp.take_along_axis(logits, jnp.broadcast_to(label, logits.shape[:-1])[..., None], axis=-1)[..., 0]
    others = jnp.where(classes == jnp.asarray(label)[..., None], -jnp.inf, logits)
    return z_y - jax.nn.logsumexp(others, axis=-1)


def logit(logits: jax.Array, label: int | jax.Array) -> jax.Array:
    """The raw logit z_y of class `label` from logits [..., C] -> [...]; for a single-logit binary model
    pass label 0 (and negate it for the negative class)."""
    logits = jnp.asarray(logits)
    if logits.ndim < 1:
        raise ValueError(f"logit needs logits [..., C]; got a scalar of shape {logits.shape}.")
    idx = jnp.broadcast_to(label, logits.shape[:-1])[..., None]
    return jnp.take_along_axis(logits, idx, axis=-1)[..., 0]


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
            if idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"Player {i} must be a group of integer positions; got {group!r}.")
            if idx.size and (idx.min() < 0 or idx.max() >= num_pos):
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
    by the batch. With a mesh, the 2^n subsets are split over the devices along `axis` (each device streams
    its share in batches of batch_size / devices) and v comes back sharded the same way; the values equal
    the single-device run.
    """
    x, baseline, member = _check_inputs(x, baseline, players, player_ndim)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size}.")
    num = 2 ** member.shape[0]
    member = jnp.asarray(member)
    if mesh is None:
        subsets = jnp.arange(num, dtype=jnp.int32)
        return _run(fn, x, baseline, member, subsets, batch_size, player_ndim, fn_args)
    shards = int(np.prod([mesh.shape[a] for a in ((axis,) if isinstance(axis, str) else axis)]))
    local = max(1, min(batch_size // shards, -(-num // shards)))
    padded = -(-num // (shards * local)) * shards * local  # every device runs whole batches
    subsets = jnp.arange(padded, dtype=jnp.int32) % num  # padding re-evaluates valid subsets, then is cut
    subsets = jax.device_put(subsets, NamedSharding(mesh, P(axis)))
    x, baseline, member, fn_args = _onto_mesh(mesh, (x, baseline, member, fn_args))
    return _run_sharded(fn, x, baseline, member, subsets, local, player_ndim, mesh, axis, fn_args)[:num]


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
