"""Training: optimiser, state, pure loss/step for jaxzoo, dead-latent tracking, normalisation folding.

``train(cfg, activations, steps=..., batch_size=...)`` -> (params, history), with ``cfg`` an ``SAEConfig``
or a whole ``RunConfig``. The pieces, each a thin call of jaxzoo:
  - ``make_optimizer(run_cfg)``: ``jaxzoo.make_optimizer(run_cfg.optimizer, ...)`` with the decoder-gradient
    projection before it (Adam, wsd schedule, clipping, NaN/inf steps skipped: ``default_optimizer``),
  - ``init_state(run_cfg, rng, sample=...)``: ``jaxzoo.plan_state`` (params sharded by logical names, the
    Adam moments like their params, restore from ``workdir``), b_dec and the input scale from ``sample``,
  - ``make_train_step(run_cfg)``: ``jaxzoo.make_train_step`` with the loss of ``sae.losses`` on x * scale
    (scale = sqrt(d_in) / mean ||x||, kept in ``state.extra``), a ``post_update`` putting W_dec rows back to
    unit norm (where the architecture calls for it) and JumpReLU theta >= 0, and dead-latent resampling,
and ``state.extra`` carrying: tokens since each latent last fired (dead latents for AuxK and resampling),
the BatchTopK threshold EMA, the count of skipped (non-finite) batches, and the step for the L1 warm-up.
Checkpoints and resume come from ``jaxzoo.fit`` (``workdir=...``).
"""

from __future__ import annotations

import functools
import pathlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxzoo
from sae import losses, ops
from sae.config import RunConfig, SAEConfig, default_optimizer
from sae.flops import flops_per_example
from sae.model import SAE


def project_decoder_gradient() -> optax.GradientTransformation:
    """Remove from each row of the W_dec gradient its component along that decoder row (OpenAI, DL's
    ConstrainedAdam), so a unit-norm decoder only rotates."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("project_decoder_gradient needs params: call tx.update(grads, state, params).")
        updates = dict(updates)
        updates["W_dec"] = ops.project_out_parallel(updates["W_dec"], params["W_dec"])
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(run_cfg: RunConfig) -> optax.GradientTransformation:
    """``run_cfg.optimizer`` for ``run_cfg.steps`` steps, with the decoder-gradient projection first when
    the architecture keeps W_dec rows unit-norm, and (JumpReLU) the threshold's update scaled by
    ``model.threshold_lr_multiplier``."""
    cfg = run_cfg.model
    before = (project_decoder_gradient(),) if cfg.constrain_decoder else ()
    scale = None
    if cfg.architecture == "jumprelu" and cfg.threshold_lr_multiplier != 1.0:
        scale = {"threshold": cfg.threshold_lr_multiplier}
    return jaxzoo.make_optimizer(run_cfg.optimizer, run_cfg.steps, before=before, lr_multipliers=scale)


def post_update(cfg: SAEConfig):
    """params -> params after each optimiser update: unit-norm decoder rows, non-negative JumpReLU theta."""

    def fn(params):
        params = dict(params)
        if cfg.constrain_decoder:
            params["W_dec"] = ops.normalize_rows(params["W_dec"])
        if cfg.architecture == "jumprelu":
            params["threshold"] = jnp.maximum(params["threshold"], 0.0)
        return params

    return fn


def initial_extra(cfg: SAEConfig, scale: float = 1.0, *, boxed: bool = False) -> dict:
    """The ``state.extra`` of a fresh run; ``boxed``: tokens_since_fired carries the logical name "latent"
    (for ``jaxzoo.plan_state``, which then shards it like the latents)."""
    since = jnp.zeros(cfg.d_sae, jnp.int32)  # saturates at cfg.dead_tokens
    return {
        "scale": jnp.asarray(scale, jnp.float32),  # input normalisation factor s
        "tokens_since_fired": nn.LogicallyPartitioned(since, ("latent",)) if boxed else since,
        "threshold": jnp.zeros((), jnp.float32),  # BatchTopK inference threshold (EMA of the min kept act)
        "skipped": jnp.zeros((), jnp.int32),  # batches skipped for NaN/inf (every row bad)
        "bad_rows": jnp.zeros((), jnp.int32),  # NaN/inf rows dropped (replaced by good rows of their batch)
        "step": jnp.zeros((), jnp.int32),
    }


def dead_latents(cfg: SAEConfig, extra: dict):
    return extra["tokens_since_fired"] >= cfg.dead_tokens


def drop_bad_rows(batch):
    """(x, n_bad): rows of ``batch`` [B, d] with a NaN/inf are replaced by copies of the batch's finite rows
    (in turn), so the batch keeps its shape and its statistics are those of the good rows; all rows bad:
    zeros (the caller then skips the step)."""
    good = jnp.all(jnp.isfinite(batch), axis=-1)  # [B]
    n_good = jnp.sum(good.astype(jnp.int32))
    rows = jnp.arange(batch.shape[0])
    order = jnp.argsort((~good).astype(jnp.int32), stable=True)  # the good rows first, in order
    source = jnp.where(good, rows, order[rows % jnp.maximum(n_good, 1)])
    x = jnp.where(n_good > 0, batch[source], 0.0)
    return x, batch.shape[0] - n_good


def make_loss_fn(cfg: SAEConfig):
    """``loss_fn(params, extra, batch, rng) -> (loss, (metrics, new_extra))`` for jaxzoo.make_train_step.

    Rows with NaN/inf are dropped (``drop_bad_rows``; counted in ``extra["bad_rows"]``); a batch with no
    finite row makes the loss NaN, and ``default_optimizer``'s ``skip_nonfinite`` skips that step."""

    def loss_fn(params, extra, batch, rng):
        del rng
        x, n_bad = drop_bad_rows(batch)
        finite = n_bad < batch.shape[0]
        x = x.astype(jnp.float32) * extra["scale"]
        dead = dead_latents(cfg, extra)
        coefficient = losses.sparsity_coefficient(cfg, extra["step"])
        loss, aux = losses.sae_loss(params, x, dead, coefficient, cfg)
        # a non-finite batch makes every gradient NaN, which optax.apply_if_finite skips
        loss = loss * jnp.where(finite, 1.0, jnp.nan)
        since = jnp.where(
            aux["fired"], 0, jnp.minimum(extra["tokens_since_fired"] + x.shape[0], cfg.dead_tokens)
        )
        threshold = extra["threshold"]
        if cfg.architecture in ("batchtopk", "matryoshka"):
            d, m = cfg.batchtopk_threshold_decay, aux["min_positive"]
            m = jnp.where(jnp.isfinite(m), m, threshold)
            threshold = jnp.where(extra["threshold"] > 0, d * threshold + (1 - d) * m, m)
        new_extra = {
            "scale": extra["scale"],
            "tokens_since_fired": jnp.where(finite, since, extra["tokens_since_fired"]),
            "threshold": jnp.where(finite, threshold, extra["threshold"]),
            "skipped": extra["skipped"] + (~finite).astype(jnp.int32),
            "bad_rows": extra["bad_rows"] + n_bad.astype(jnp.int32),
            "step": extra["step"] + 1,
        }
        metrics = {k: v for k, v in aux.items() if k not in ("x_hat", "fired", "min_positive", "f")}
        metrics["explained_variance"] = ops.explained_variance(x, aux["x_hat"])
        metrics["dead_fraction"] = jnp.mean(dead.astype(jnp.float32))
        metrics["skipped"] = new_extra["skipped"]
        metrics["bad_rows"] = new_extra["bad_rows"]
        if cfg.architecture in ("batchtopk", "matryoshka"):
            metrics["threshold"] = threshold
        return loss, (metrics, new_extra)

    return loss_fn


def fold_scale(params: dict, scale, cfg: SAEConfig) -> dict:
    """Fold the input scale s into the weights so the SAE takes raw activations: an SAE trained on s*x
    has (s x - b_dec) W_enc = (x - b_dec/s)(s W_enc) and x_hat = (f W_dec + b_dec)/s, so
    W_enc *= s, W_dec /= s, b_dec /= s leave the latents f (and thresholds) unchanged.

    With ``cfg.rescale_by_decoder_norm`` the latents are coefficients on unit directions, f = code(z * n) with
    n_i = ||W_dec,i||; W_dec /= s divides n by s, so f (and a threshold on it) is divided by s too."""
    scale = jnp.asarray(scale, jnp.float32)
    out = dict(params)
    out["W_enc"] = params["W_enc"] * scale
    out["W_dec"] = params["W_dec"] / scale
    out["b_dec"] = params["b_dec"] / scale
    if cfg.rescale_by_decoder_norm and "threshold" in params:
        out["threshold"] = params["threshold"] / scale
    return {k: v.astype(params[k].dtype) for k, v in out.items()}  # bf16 weights stay bf16


def fold_decoder_norm(params: dict, cfg: SAEConfig) -> dict:
    """For ``cfg.rescale_by_decoder_norm``: W_enc *= n, b_enc *= n, W_dec /= n with n_i = ||W_dec,i|| (SAELens'
    ``_fold_norm_topk``); the code z * n and the thresholds on it are unchanged. Otherwise ``params``."""
    if not cfg.rescale_by_decoder_norm:
        return params
    return dict(losses.effective_params(params, cfg))


# --- data -----------------------------------------------------------------------------------------------


class _Batches:
    """step -> batch for an in-memory [N, d_in] array: a fresh permutation each epoch, seeded by
    (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, data: np.ndarray, batch_size: int, seed: int):
        if data.shape[0] < batch_size:
            raise ValueError(f"need at least batch_size={batch_size} activations; got {data.shape[0]}.")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.per_epoch = data.shape[0] // batch_size
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = (
                epoch,
                np.random.default_rng((self.seed, epoch)).permutation(len(self.data)),
            )
        return self.data[np.sort(self._perm[i * self.batch_size : (i + 1) * self.batch_size])]


class _Checked:
    """Wraps a batch source: checks shapes before anything is traced, counts NaN/inf rows (warns once; raises
    ValueError once more than ``cfg.max_bad_fraction`` of the rows seen so far are bad)."""

    def __init__(self, cfg: SAEConfig, batch_size: int):
        self.cfg, self.batch_size, self.warned = cfg, batch_size, False
        self.rows = self.bad = 0

    def __call__(self, batch) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        if batch.ndim != 2 or batch.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"activation batches must have shape [batch, d_in={self.cfg.d_in}]; got {batch.shape}."
            )
        if batch.shape[0] != self.batch_size:
            raise ValueError(f"expected batches of batch_size={self.batch_size} rows; got {batch.shape[0]}.")
        bad = int(np.count_nonzero(~np.isfinite(batch).all(-1)))
        self.rows, self.bad = self.rows + len(batch), self.bad + bad
        if bad and self.bad > self.cfg.max_bad_fraction * self.rows:
            raise ValueError(
                f"{self.bad} of {self.rows} activation rows so far contain NaN or inf, more than "
                f"max_bad_fraction={self.cfg.max_bad_fraction}; check the activations (or raise the limit)."
            )
        if bad and not self.warned:
            warnings.warn(
                "activation rows with NaN or inf are dropped (counted in metrics['bad_rows']).",
                RuntimeWarning,
                stacklevel=3,
            )
            self.warned = True
        return batch


class _CheckedIterator:
    """``check`` applied to each batch of an iterator, keeping a grain iterator's get_state / set_state so
    ``jaxzoo.fit`` saves and restores the data position with each checkpoint."""

    def __init__(self, iterator, check):
        self.iterator, self.check = iterator, check
        if hasattr(iterator, "get_state"):
            self.get_state, self.set_state = iterator.get_state, iterator.set_state

    def __iter__(self):
        return self

    def __next__(self):
        return self.check(next(self.iterator))


def _from_shards(source, cfg: SAEConfig, batch_size: int, seed: int):
    """(sample, grain iterator) for activations on disk (``jaxzoo.data.ShardedArrays`` with one field "x")."""
    from jaxzoo import data

    dtype, row_shape = source.fields.get("x", (None, None))
    if list(source.fields) != ["x"] or row_shape != (cfg.d_in,):
        raise ValueError(
            f"activation shards must hold one field 'x' of rows [d_in={cfg.d_in}]; got "
            f"{ {k: v[1] for k, v in source.fields.items()} }."
        )
    if len(source) < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} activations; the shards hold {len(source)}.")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(source), min(cfg.init_samples, len(source)), replace=False))
    sample = np.stack([source[int(i)] for i in idx]).astype(np.float32)
    return sample, iter(data.make_loader(source, batch_size=batch_size, seed=seed))


def _init_sample(activations, cfg: SAEConfig, batch_size: int, seed: int):
    """(sample [n, d_in] for the scale and b_dec, batch source). Iterators are read ahead and replayed;
    shards on disk (a folder or ``jaxzoo.data.ShardedArrays``) stream through a grain loader."""
    from jaxzoo import data

    if isinstance(activations, str | pathlib.Path):
        activations = data.ShardedArrays(activations)
    if isinstance(activations, data.ShardedArrays):
        return _from_shards(activations, cfg, batch_size, seed)
    if isinstance(activations, np.ndarray | jax.Array):
        data = np.asarray(activations, np.float32)
        if data.ndim != 2 or data.shape[-1] != cfg.d_in:
            raise ValueError(f"activations must have shape [N, d_in={cfg.d_in}]; got {data.shape}.")
        rng = np.random.default_rng(seed)
        n = min(cfg.init_samples, len(data))
        sample = data[np.sort(rng.choice(len(data), n, replace=False))]
        return sample, _Batches(data, batch_size, seed)
    if not isinstance(activations, Iterable):
        raise ValueError(
            f"activations must be an array [N, d_in] or an iterable of batches; got {type(activations)}."
        )
    iterator: Iterator = iter(activations)
    head = []
    while sum(len(b) for b in head) < max(cfg.init_samples, 1):
        try:
            head.append(np.asarray(next(iterator), np.float32))
        except StopIteration:
            break
    if not head:
        raise ValueError("the activation iterator yielded no batches.")
    for b in head:
        if b.ndim != 2 or b.shape[-1] != cfg.d_in:
            raise ValueError(f"activation batches must have shape [batch, d_in={cfg.d_in}]; got {b.shape}.")
    sample = np.concatenate(head)
    sample = sample[np.isfinite(sample).all(-1)]

    def replay():
        yield from head
        yield from iterator

    return sample, replay()


def initial_scale_and_bias(sample: np.ndarray, cfg: SAEConfig) -> tuple[float, np.ndarray]:
    """(s, b_dec): the normalisation factor and the decoder bias init (in scaled units) from a sample."""
    x = jnp.asarray(sample[np.isfinite(sample).all(-1)])
    if x.shape[0] == 0:
        raise ValueError("no finite activations in the initialisation sample.")
    scale = float(ops.norm_scale(x)) if cfg.normalize_activations else 1.0
    if cfg.b_dec_init == "geometric_median":
        b_dec = ops.geometric_median(x * scale)
    elif cfg.b_dec_init == "mean":
        b_dec = jnp.mean(x * scale, axis=0)
    else:
        b_dec = jnp.zeros(cfg.d_in)
    return scale, np.asarray(b_dec, np.float32)


def recipe(run_cfg: RunConfig, *, scale: float = 1.0, b_dec: np.ndarray | None = None) -> jaxzoo.Recipe:
    """Module, init function (boxed params; b_dec set to ``b_dec`` when given; no BatchTopK threshold, which
    is an EMA in ``extra`` until ``final_params``), optimiser and extra state of a run."""
    cfg = run_cfg.model
    module = SAE(cfg)
    sample = jnp.zeros((1, cfg.d_in), jnp.float32)

    def init_fn(rng):
        params = dict(module.init(rng, sample)["params"])
        if b_dec is not None:
            params["b_dec"] = params["b_dec"].replace_boxed(jnp.asarray(b_dec, cfg.precision.param))
        if cfg.architecture in ("batchtopk", "matryoshka"):
            params.pop("threshold")
        return params

    return jaxzoo.Recipe(
        model=module,
        init_fn=init_fn,
        tx=make_optimizer(run_cfg),
        extra=lambda rng: initial_extra(cfg, scale, boxed=True),
    )


def init_state(
    run_cfg: RunConfig,
    rng: jax.Array | None = None,
    *,
    sample: np.ndarray | None = None,
    mesh=None,
    workdir=None,
    zero1: bool = False,
    allow_config_change: bool = False,
) -> jaxzoo.StatePlan:
    """The training state of ``run_cfg`` through ``jaxzoo.plan_state``: sharded by logical names on ``mesh``
    (latents over "model", Adam moments like their params; ``zero1``: also over "data"), restored from
    ``workdir/checkpoints`` when there is one (the config must then match).

    ``sample`` [n, d_in]: activations that set the input scale and the b_dec initialisation
    (``cfg.b_dec_init``); without it the scale is 1 and b_dec 0. ``rng`` defaults to ``key(run_cfg.seed)``.
    """
    cfg = run_cfg.model
    scale, b_dec = (1.0, None) if sample is None else initial_scale_and_bias(sample, cfg)
    r = recipe(run_cfg, scale=scale, b_dec=b_dec)
    return jaxzoo.plan_state(
        r.init_fn,
        r.tx,
        jax.random.key(run_cfg.seed) if rng is None else rng,
        mesh=mesh,
        rules=r.rules,
        extra=r.extra,
        workdir=workdir,
        config=run_cfg,
        allow_config_change=allow_config_change,
        zero1=zero1,
    )


def make_train_step(run_cfg: RunConfig, *, mesh=None, state_sharding=None, donate: bool = True):
    """The jitted (sharded when ``mesh``) train step ``step(state, batch, rng) -> (state, metrics)``: the SAE
    loss, ``make_optimizer(run_cfg)``, unit-norm decoder / non-negative theta after each update, and dead-latent
    resampling every ``model.resample_every`` steps."""
    cfg = run_cfg.model
    step = jaxzoo.make_train_step(
        make_loss_fn(cfg),
        make_optimizer(run_cfg),
        mesh=mesh,
        state_sharding=state_sharding,
        has_extra=True,
        post_update=post_update(cfg),
        donate=donate,
    )
    return with_resampling(step, cfg, state_sharding=state_sharding if mesh is not None else None)


def resample_dead(state, batch, rng, cfg: SAEConfig):
    """Re-initialise dead latents (dictionary_learning / Anthropic 2023 resampling), for ReLU and Gated SAEs.

    Each dead latent i gets an input x_j drawn with probability proportional to ||x_j - x_hat_j||^2 (our
    reading; the note marks the exact weighting as a guess): W_dec,i = x_j/||x_j||, encoder column
    = 0.2 * (mean alive encoder-column norm) * x_j/||x_j||, its biases 0, and its Adam moments zeroed.
    """
    params, extra = dict(state.params), dict(state.extra)
    x = jnp.asarray(batch, jnp.float32) * extra["scale"]
    dead = dead_latents(cfg, extra)
    _, aux = losses.sae_loss(params, x, dead, 0.0, cfg)
    err = ops.sum_sq(x - aux["x_hat"])
    probs = err / jnp.maximum(jnp.sum(err), 1e-30)
    picks = jax.random.choice(rng, x.shape[0], (cfg.d_sae,), p=probs)
    directions = ops.normalize_rows(x[picks])  # [m, d]
    enc_norms = jnp.sqrt(jnp.sum(params["W_enc"].astype(jnp.float32) ** 2, axis=0))
    alive = ~dead
    alive_norm = jnp.where(jnp.any(alive), jnp.sum(enc_norms * alive) / jnp.maximum(jnp.sum(alive), 1), 1.0)

    def resample(p):  # the dead latents' weights replaced, in each leaf's dtype (params and master copy)
        p = dict(p)
        p["W_dec"] = jnp.where(dead[:, None], directions, p["W_dec"]).astype(p["W_dec"].dtype)
        p["W_enc"] = jnp.where(dead[None, :], 0.2 * alive_norm * directions.T, p["W_enc"]).astype(p["W_enc"].dtype)
        for name in ("b_enc", "b_gate", "b_mag", "r_mag"):
            if name in p:
                p[name] = jnp.where(dead, 0.0, p[name]).astype(p[name].dtype)
        return p

    params = resample(params)

    def zero_moments(path, leaf):
        keys = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
        if not keys or keys[-1] not in params or jnp.shape(leaf) != jnp.shape(params[keys[-1]]):
            return leaf
        if keys[-1] == "W_enc":
            return jnp.where(dead[None, :], 0.0, leaf)
        if keys[-1] == "W_dec":
            return jnp.where(dead[:, None], 0.0, leaf)
        if jnp.shape(leaf) == (cfg.d_sae,):
            return jnp.where(dead, 0.0, leaf)
        return leaf

    opt_state = jax.tree_util.tree_map_with_path(zero_moments, state.opt_state)
    opt_state = jaxzoo.optim.map_master(opt_state, resample)  # float32 master weights resampled alike
    extra["tokens_since_fired"] = jnp.where(dead, 0, extra["tokens_since_fired"])
    return state.replace(params=params, opt_state=opt_state, extra=extra)


def with_resampling(step, cfg: SAEConfig, *, state_sharding=None):
    """Wrap a train step so that every ``cfg.resample_every`` steps dead latents are resampled (a host-side
    check of the step counter; the resampling itself is one jitted function)."""
    if not cfg.resample_every:
        return step
    if cfg.architecture not in ("relu", "gated"):
        raise ValueError(
            f"resample_every is for relu and gated SAEs (TopK/BatchTopK use AuxK); got {cfg.architecture!r}."
        )
    compiled = {}

    def wrapped(state, batch, rng):
        state, metrics = step(state, batch, rng)
        count = int(state.step)
        if count % cfg.resample_every == 0:
            if "fn" not in compiled:
                fn = functools.partial(resample_dead, cfg=cfg)
                out = state_sharding
                if out is None and isinstance(state.params["W_dec"].sharding, jax.sharding.NamedSharding):
                    out = jaxzoo.shardings_of(state)
                compiled["fn"] = jax.jit(fn, out_shardings=out) if out is not None else jax.jit(fn)
            state = compiled["fn"](state, batch, jax.random.fold_in(rng, count))
        return state, metrics

    return wrapped


@functools.lru_cache(maxsize=16)
def _cached_step(run_cfg: RunConfig):
    """One compiled single-device step per run config: repeated ``train`` calls (sweeps, resumes) reuse it."""
    return make_train_step(run_cfg)


def final_params(state, cfg: SAEConfig) -> dict:
    """The trained parameters for raw activations: BatchTopK threshold attached, input scale folded in, then
    (free-decoder TopK family) the decoder norms folded into the encoder, leaving unit-norm rows."""
    params = dict(state.params)
    if cfg.architecture in ("batchtopk", "matryoshka"):
        params["threshold"] = jnp.full((cfg.d_sae,), state.extra["threshold"], jnp.float32)
    if cfg.normalize_activations:
        params = fold_scale(params, state.extra["scale"], cfg)
    return fold_decoder_norm(params, cfg)


def run_config(
    config: SAEConfig | RunConfig,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    seed: int | None = None,
) -> RunConfig:
    """A ``RunConfig`` from a model config (``steps`` and ``batch_size`` then required; the optimiser is
    ``default_optimizer(config, learning_rate)``) or from a run config with the given fields replaced."""
    if isinstance(config, SAEConfig):
        if steps is None or batch_size is None:
            raise ValueError(
                "train(SAEConfig, ...) needs steps=... and batch_size=... (or pass a sae.RunConfig)."
            )
        return RunConfig(
            model=config,
            optimizer=default_optimizer(config, learning_rate),
            steps=steps,
            batch_size=batch_size,
            seed=0 if seed is None else seed,
        )
    if not isinstance(config, RunConfig):
        raise ValueError(f"expected a sae.SAEConfig or sae.RunConfig; got {type(config).__name__}.")
    changes = {
        k: v for k, v in (("steps", steps), ("batch_size", batch_size), ("seed", seed)) if v is not None
    }
    if learning_rate is not None:
        changes["optimizer"] = config.optimizer.replace(learning_rate=learning_rate)
    return config.replace(**changes) if changes else config


def train(
    config: SAEConfig | RunConfig,
    activations: Any,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    seed: int | None = None,
    mesh=None,
    zero1: bool = False,
    workdir=None,
    checkpoint_every: int = 0,
    progress: bool = True,
    log_every: int = 10,
) -> tuple[dict, list[dict]]:
    """Train an SAE; returns (params for raw activations, history: metrics every ``log_every`` steps).

    Args:
      config: a ``RunConfig``, or an ``SAEConfig`` with ``steps`` and ``batch_size`` (then Adam at
        ``learning_rate``, default 2e-4 / sqrt(d_sae / 2**14)); given keywords override the run config's.
      activations: an array [N, d_in] (shuffled into batches each epoch), an iterable of [batch_size, d_in]
        batches (e.g. an ``ActivationStore``), or activations on disk: a folder written by
        ``ActivationStore.write_shards`` / ``jaxzoo.data.write_array_shards`` (or its ``ShardedArrays``),
        streamed memory-mapped through ``jaxzoo.data.make_loader`` (shuffled, resumable with ``workdir``).
      mesh: a jaxzoo mesh ({"data": ..., "model": ...}): batch split over "data", latents over "model";
        ``zero1``: the Adam moments also over "data".
      workdir: checkpoints every ``checkpoint_every`` steps plus metrics.jsonl and config.json; a rerun
        with the same run config resumes there (another config raises ValueError).
    """
    run_cfg = run_config(config, steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    cfg = run_cfg.model
    sample, source = _init_sample(activations, cfg, run_cfg.batch_size, run_cfg.seed)
    plan = init_state(run_cfg, sample=sample, mesh=mesh, workdir=workdir, zero1=zero1)
    if mesh is None:
        step = _cached_step(run_cfg)
    else:
        step = make_train_step(run_cfg, mesh=mesh, state_sharding=plan.shardings)
    check = _Checked(cfg, run_cfg.batch_size)
    if callable(source):
        batches = lambda s: check(source(s))
    else:
        batches = _CheckedIterator(iter(source), check)
    state, history = jaxzoo.fit(
        plan.state,
        step,
        batches,
        num_steps=run_cfg.steps,
        rng=jax.random.key(run_cfg.seed),
        workdir=workdir,
        checkpoint_every=checkpoint_every,
        config=run_cfg,
        desc=f"sae/{cfg.architecture}",
        examples_per_step=run_cfg.batch_size,
        flops_per_step=run_cfg.batch_size * flops_per_example(cfg),
        progress=progress,
        log_every=log_every,
    )
    return final_params(state, cfg), history
