"""Optimiser, EMA, sharded train step == single-device step, and an orbax round trip of the state."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxzoo.checkpoint import Checkpointer
from jaxzoo.sharding import init_sharded, make_mesh, shard_batch
from jaxzoo.train import TrainState
from tora.config import FlowConfig, STDiTConfig, TrainConfig
from tora.stdit import STDiT
from tora.train import create_state, ema_params, ema_weights, make_optimizer, make_stdit_step


def test_ema_tracks_updated_weights():
    decay = 0.9
    tx = optax.chain(optax.sgd(0.5), ema_weights(decay))
    p = {"w": jnp.array([1.0, -2.0])}
    state = tx.init(p)
    ema = np.array([1.0, -2.0])
    for g in ([1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]):
        u, state = tx.update({"w": jnp.array(g)}, state, p)
        p = optax.apply_updates(p, u)
        ema = decay * ema + (1 - decay) * np.asarray(p["w"])  # Open-Sora's update_ema after the step
        np.testing.assert_allclose(ema_params(state)["w"], ema, atol=1e-6)


def test_optimizer_clips_and_uses_opensora_adamw():
    cfg = TrainConfig(warmup_steps=0)
    tx = make_optimizer(cfg)
    p = {"w": jnp.zeros(3)}
    g = {"w": jnp.array([30.0, 40.0, 0.0])}  # norm 50 -> clipped to norm 1
    u, _ = tx.update(g, tx.init(p), p)
    gc = np.array([0.6, 0.8, 0.0])
    # first AdamW step: m = (1-b1) g, v = (1-b2) g^2, bias-corrected -> g / (|g| + eps), times -lr
    want = -cfg.learning_rate * gc / (np.abs(gc) + cfg.adam_eps)
    np.testing.assert_allclose(u["w"], want, rtol=1e-5, atol=1e-12)


def _setup(b=4):
    cfg = STDiTConfig.tiny(depth=1)
    model = STDiT(cfg)
    r = np.random.default_rng(0)
    batch = {
        "x": jnp.asarray(r.normal(size=(b, 2, 4, 4, 4)), jnp.float32),
        "y": jnp.asarray(r.normal(size=(b, 3, cfg.caption_channels)), jnp.float32),
        "x_mask": jnp.asarray(r.uniform(size=(b, 2)) < 0.7),
    }
    return cfg, model, batch


@pytest.mark.slow
def test_sharded_train_step_equals_single_device_step():
    cfg, model, batch = _setup()
    x, y = batch["x"], batch["y"]
    # SGD, not AdamW: Adam's first step is lr * g / (|g| + 1e-15), which turns float-noise gradients of
    # the zero-initialised weights (~1e-9, summed in another order across devices) into full +-lr steps.
    tx = optax.chain(optax.sgd(0.5), ema_weights(0.99))
    flow = FlowConfig()
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), x, jnp.zeros(4), y))["params"]
    state = jax.jit(lambda p: TrainState.create(p, tx))(params)
    step = make_stdit_step(model, tx, flow, donate=False)
    want, m1 = step(state, batch, jax.random.key(1))

    mesh = make_mesh({"data": 4, "model": 2})
    variables, _ = init_sharded(model, jax.random.key(0), x, jnp.zeros(4), y, mesh=mesh)
    with jax.set_mesh(mesh):
        sstate = jax.jit(lambda p: TrainState.create(p, tx))(variables["params"])
        sstep = make_stdit_step(model, tx, flow, mesh=mesh, donate=False)
        got, m2 = sstep(sstate, shard_batch(batch, mesh), jax.random.key(1))
    assert float(m2["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), got.params, want.params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
        ema_params(got.opt_state),
        ema_params(want.opt_state),
    )


def test_state_with_ema_round_trips_through_orbax(tmp_path):
    p = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    state, tx = create_state(p, TrainConfig(warmup_steps=0))
    u, opt = tx.update(jax.tree.map(jnp.ones_like, p), state.opt_state, state.params)
    state = state.replace(params=optax.apply_updates(state.params, u), opt_state=opt, step=state.step + 1)
    ck = Checkpointer(tmp_path, async_save=False)
    ck.save(1, state, config=TrainConfig())
    fresh, _ = create_state(jax.tree.map(jnp.zeros_like, p), TrainConfig(warmup_steps=0))
    back = ck.restore(fresh)
    ck.close()
    jax.tree.map(np.testing.assert_array_equal, back.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, ema_params(back.opt_state), ema_params(state.opt_state))
    assert int(back.step) == 1
