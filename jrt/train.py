"""Training JRT / Based with `jaxzoo.train`: the reference's AdamW recipe and a (sharded) train step.

Reference recipe: AdamW lr 8e-4, betas (0.9, 0.95), weight decay 0.1 (none on biases and norm scales),
linear warm-up then cosine decay to 10% of the peak (8e-5), gradient clipping at global norm 1.0,
bf16 compute (set `JRTConfig(dtype="bfloat16")`; parameters, residual stream and sums stay float32).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxzoo.sharding import DEFAULT_RULES, logical_shardings, rules_for_mesh
from jaxzoo.train import TrainState
from jaxzoo.train import make_train_step as _make_train_step
from jrt.config import JRTConfig
from jrt.losses import make_loss_fn
from jrt.model import LM, init_params


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings; the defaults are the reference's JRT-360M run."""

    lr: float = 8e-4  # peak learning rate
    b1: float = 0.9  # AdamW beta1
    b2: float = 0.95  # AdamW beta2
    weight_decay: float = 0.1  # decoupled weight decay (not on biases / norm scales)
    warmup_steps: int = 600  # linear warm-up from 0 to lr (1000 for the 1.3B run)
    total_steps: int = 60000  # cosine decay length including warm-up (100k for 1.3B)
    end_lr_ratio: float = 0.1  # final lr = end_lr_ratio * lr (8e-5)
    grad_clip: float = 1.0  # global-norm gradient clipping (0: off)

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, but got {self.lr}.")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, total_steps={self.total_steps}], but got {self.warmup_steps}."
            )
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be positive, but got {self.total_steps}.")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0, but got {self.grad_clip}.")


def lr_schedule(tcfg: TrainConfig) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=tcfg.lr,
        warmup_steps=tcfg.warmup_steps,
        decay_steps=tcfg.total_steps,
        end_value=tcfg.lr * tcfg.end_lr_ratio,
    )


def decay_mask(params):
    """True for weights that get weight decay: everything but biases and RMSNorm scales."""

    def decays(path, _):
        names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]  # skips logical boxes
        return names[-1] not in ("bias", "scale")

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(tcfg: TrainConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(
        lr_schedule(tcfg), b1=tcfg.b1, b2=tcfg.b2, weight_decay=tcfg.weight_decay, mask=decay_mask
    )
    if tcfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(tcfg.grad_clip), adamw)
    return adamw


def create_train_state(cfg: JRTConfig, tcfg: TrainConfig, rng, *, mesh=None, rules=DEFAULT_RULES):
    """A TrainState at step 0 and its shardings (None without a mesh); parameters are created sharded."""
    tx = make_optimizer(tcfg)
    if mesh is None:
        return TrainState.create(init_params(cfg, rng), tx), None
    rules = rules_for_mesh(rules, mesh)
    sample = jnp.zeros((1, max(cfg.prefix_len, 1)), jnp.int32)

    def init(r):  # params boxed with logical names; optax states inherit the boxes, hence the shardings
        with nn.logical_axis_rules(rules):
            return TrainState.create(LM(cfg).init(r, sample)["params"], tx)

    with jax.set_mesh(mesh):
        shardings = logical_shardings(jax.eval_shape(init, rng), mesh, rules)
        state = jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=shardings)(rng)
    return state, shardings


def make_train_step(cfg: JRTConfig, tcfg: TrainConfig, *, mesh=None, state_sharding=None, donate=True):
    """Jitted `step(state, batch, rng) -> (state, metrics)`: JRT/Based loss, AdamW, clipping."""
    return _make_train_step(
        make_loss_fn(cfg), make_optimizer(tcfg), mesh=mesh, state_sharding=state_sharding, donate=donate
    )
