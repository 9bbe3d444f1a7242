"""Euler sampler: exact on an oracle velocity field, guidance algebra, conditioning frames, one compile
per shape, and a tiny STDiT trained on one clip samples closer to it than noise."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tora.config import OPENSORA_OPTIMIZER, FlowConfig, RunConfig, STDiTConfig
from tora.sample import euler_timesteps, make_sampler
from tora.stdit import STDiT
from tora.train import init_state, make_train_step


class Oracle(nn.Module):
    """The exact rectified-flow velocity towards a point mass: v(x, t) = (x* - x) / t, with x* = `cond`
    for captioned rows and `uncond` for rows using the null caption."""

    config: Any

    @nn.compact
    def __call__(self, x, t, y, y_mask=None, fps=None, x_mask=None, motion=None, y_drop=None):
        c = self.param("cond", nn.initializers.zeros, x.shape[1:])
        u = self.param("uncond", nn.initializers.zeros, x.shape[1:])
        target = jnp.where(y_drop[:, None, None, None, None], u, c)
        return (target - x) / t[:, None, None, None, None]


CFG = STDiTConfig.tiny()
SHAPE = (2, 3, 2, 2, CFG.in_channels)


def oracle_params(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"cond": jax.random.normal(k1, SHAPE[1:]), "uncond": jax.random.normal(k2, SHAPE[1:])}


def test_euler_timesteps_match_opensora():
    ts = np.asarray(euler_timesteps(4, 2.0))
    raw = [1 - i / 4 for i in range(4)]
    want = [2 * t / (1 + t) for t in raw] + [0.0]
    np.testing.assert_allclose(ts, want, atol=1e-6)
    np.testing.assert_allclose(euler_timesteps(3), [1, 2 / 3, 1 / 3, 0], atol=1e-6)


@pytest.mark.parametrize("guidance", [1.0, 0.0, 3.5])
def test_sampler_is_exact_on_the_oracle_field_with_guidance(guidance):
    p = oracle_params()
    sample = make_sampler(Oracle(CFG), FlowConfig(num_sampling_steps=5))
    y = jnp.zeros((2, 1, 1))
    z = sample(p, jax.random.key(0), y, num_frames=3, height=2, width=2, guidance_scale=guidance)
    # v_u + s (v_c - v_u) is the oracle field towards u + s (c - u); Euler lands on it at t = 0
    want = p["uncond"] + guidance * (p["cond"] - p["uncond"])
    np.testing.assert_allclose(z, jnp.broadcast_to(want, SHAPE), atol=1e-5)


def test_conditioning_frames_are_kept_and_one_compile_per_shape():
    p = oracle_params()
    sample = make_sampler(Oracle(CFG), FlowConfig(num_sampling_steps=4))
    y = jnp.zeros((2, 1, 1))
    x_cond = jax.random.normal(jax.random.key(9), SHAPE)
    x_mask = jnp.array([[False, True, True], [True, True, False]])
    z = sample(p, jax.random.key(0), y, num_frames=3, height=2, width=2, x_cond=x_cond, x_mask=x_mask)
    np.testing.assert_array_equal(z[0, 0], x_cond[0, 0])
    np.testing.assert_array_equal(z[1, 2], x_cond[1, 2])
    np.testing.assert_allclose(
        z[0, 1:], jnp.broadcast_to(p["uncond"] + 7 * (p["cond"] - p["uncond"]), SHAPE)[0, 1:], atol=1e-4
    )
    n = sample.jitted._cache_size()
    sample(
        p,
        jax.random.key(1),
        y,
        num_frames=3,
        height=2,
        width=2,
        guidance_scale=2.0,
        x_cond=x_cond,
        x_mask=x_mask,
    )
    assert sample.jitted._cache_size() == n  # new guidance scale and key: no recompilation


@pytest.mark.slow
def test_trained_tiny_stdit_samples_towards_its_training_clip():
    cfg = STDiTConfig.tiny(depth=1)
    model = STDiT(cfg)
    x_star = jax.random.normal(jax.random.key(0), (1, 2, 4, 4, 4))
    y = jax.random.normal(jax.random.key(1), (1, 3, cfg.caption_channels))
    batch = {"x": jnp.repeat(x_star, 8, 0), "y": jnp.repeat(y, 8, 0)}
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(2), batch["x"][:1], jnp.zeros(1), y))["params"]
    flow = FlowConfig(use_timestep_transform=False, num_sampling_steps=10, guidance_scale=1.0)
    run = RunConfig(model=cfg, flow=flow, optimizer=OPENSORA_OPTIMIZER.replace(learning_rate=3e-3, warmup_steps=0),
                    steps=150, batch_size=8)
    state = init_state(run, params=jax.tree.map(jnp.copy, params)).state
    step = make_train_step(run)
    losses = []
    for _ in range(150):
        state, m = step(state, batch, jax.random.key(3))
        losses.append(float(m["loss"]))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    sample = make_sampler(model, flow)
    err = lambda z: float(jnp.mean((z - x_star) ** 2))
    z = sample(state.params, jax.random.key(4), jnp.repeat(y, 4, 0), num_frames=2, height=4, width=4)
    z0 = sample(params, jax.random.key(4), jnp.repeat(y, 4, 0), num_frames=2, height=4, width=4)
    noise = jax.random.normal(jax.random.key(4), z.shape)
    # 150 steps of a width-32 model: on this problem we measured 1.20 against 1.85 for the noise itself.
    assert err(z) < 0.75 * err(noise) and err(z) < 0.75 * err(z0)
