"""Training for STDiT and VAE3D through `jaxzoo.train`: AdamW (Open-Sora 1.2: lr 1e-4, eps 1e-15, wd 0),
global-norm clip 1.0, linear warm-up, and an EMA of the weights (decay 0.99) kept in the optimizer state.

The EMA is the last link of the optax chain: it sees the final update u and the current params p and stores
ema <- d ema + (1 - d)(p + u), i.e. the EMA of the *updated* weights, as Open-Sora's `update_ema` after each
step. Keeping it in `opt_state` means `jaxzoo.train.make_train_step`, sharding and orbax checkpoints carry
it with no extra code; read it with `ema_params(state.opt_state)`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import optax

from jaxzoo.train import TrainState, make_train_step
from tora.config import FlowConfig, TrainConfig
from tora.flow import make_loss_fn
from tora.vae import VAE3D, make_vae_loss_fn


class EmaState(NamedTuple):
    ema: Any  # EMA of the parameters, same tree as the params


def ema_weights(decay: float) -> optax.GradientTransformation:
    """Pass updates through unchanged; track ema <- decay * ema + (1 - decay) * (params + updates)."""

    def init(params):
        return EmaState(ema=jax.tree.map(lambda p: p.copy(), params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("ema_weights needs the params: call tx.update(grads, opt_state, params).")
        new = jax.tree.map(lambda e, p, u: decay * e + (1 - decay) * (p + u), state.ema, params, updates)
        return updates, EmaState(ema=new)

    return optax.GradientTransformation(init, update)


def make_optimizer(cfg: TrainConfig = TrainConfig()) -> optax.GradientTransformation:
    """clip_by_global_norm -> AdamW with linear warm-up -> EMA tracker."""
    lr = (
        optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
        if cfg.warmup_steps
        else cfg.learning_rate
    )
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.adam_eps, weight_decay=cfg.weight_decay),
        ema_weights(cfg.ema_decay),
    )


def ema_params(opt_state) -> Any:
    """The EMA weights stored in an optimizer state built by `make_optimizer`."""
    for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, EmaState)):
        if isinstance(s, EmaState):
            return s.ema
    raise ValueError("this optimizer state holds no EMA; build the optimizer with tora.train.make_optimizer.")


def create_state(params, cfg: TrainConfig = TrainConfig()) -> tuple[TrainState, optax.GradientTransformation]:
    """(TrainState at step 0, its optimizer). Params may be sharded: jit keeps their shardings."""
    tx = make_optimizer(cfg)
    state = jax.jit(lambda p: TrainState.create(p, tx))(params)
    return state, tx


def make_stdit_step(
    model: nn.Module, tx: optax.GradientTransformation, flow_cfg: FlowConfig = FlowConfig(), **step_kwargs
):
    """Jitted `step(state, batch, rng) -> (state, metrics)` of the rectified-flow loss (see `tora.flow`).
    step_kwargs go to `jaxzoo.train.make_train_step` (mesh, state_sharding, batch_sharding, donate)."""
    return make_train_step(make_loss_fn(model, flow_cfg), tx, **step_kwargs)


def make_vae_step(vae: VAE3D, tx: optax.GradientTransformation, **step_kwargs):
    """Jitted `step(state, batch, rng) -> (state, metrics)` of the VAE loss (L1 + kl_weight * KL)."""
    return make_train_step(make_vae_loss_fn(vae), tx, **step_kwargs)
