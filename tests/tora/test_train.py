"""Open-Sora's optimizer through jaxzoo: EMA of the updated weights, clipping + AdamW, warm-up, and the
frozen backbone of Tora runs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxzoo
from jaxzoo.optim import ema_weights
from tora.config import OPENSORA_OPTIMIZER, RunConfig, STDiTConfig
from tora.tora_model import freeze
from tora.train import make_optimizer


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
        np.testing.assert_allclose(jaxzoo.ema_params(state)["w"], ema, atol=1e-6)


def test_optimizer_clips_and_uses_opensora_adamw():
    run = RunConfig(model=STDiTConfig.tiny(), optimizer=OPENSORA_OPTIMIZER.replace(warmup_steps=0), steps=10)
    tx = make_optimizer(run)
    p = {"w": jnp.zeros(3)}
    g = {"w": jnp.array([30.0, 40.0, 0.0])}  # norm 50 -> clipped to norm 1
    u, _ = tx.update(g, tx.init(p), p)
    gc = np.array([0.6, 0.8, 0.0])
    # first AdamW step: m = (1-b1) g, v = (1-b2) g^2, bias-corrected -> g / (|g| + eps), times -lr
    want = -1e-4 * gc / (np.abs(gc) + 1e-15)
    np.testing.assert_allclose(u["w"], want, rtol=1e-5, atol=1e-12)


def test_opensora_defaults_and_warmup():
    opt = RunConfig().optimizer
    assert (opt.algorithm, opt.learning_rate, opt.eps, opt.weight_decay, opt.grad_clip, opt.ema_decay) == (
        "adamw", 1e-4, 1e-15, 0.0, 1.0, 0.99)
    assert (opt.schedule, opt.warmup_steps) == ("constant", 1000)
    lr = jaxzoo.lr_schedule(opt, 20000)
    np.testing.assert_allclose([lr(0), lr(500), lr(1000), lr(19999)], [0.0, 5e-5, 1e-4, 1e-4], rtol=1e-6)


def test_freeze_zeroes_frozen_updates_clips_trainable_only_and_keeps_no_state_for_frozen():
    params = {"stdit": {"spatial_blocks_0": {"w": jnp.ones(2)}, "motion_fuser": {"w": jnp.ones(2)}},
              "extractor": {"w": jnp.ones(2), "motion_vae": {"w": jnp.ones(2)}}}
    grads = jax.tree.map(lambda p: 3.0 * p, params)
    tx = freeze(optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(1.0)), "motion")
    u, _ = tx.update(grads, tx.init(params), params)
    assert not np.any(u["stdit"]["spatial_blocks_0"]["w"]) and not np.any(u["extractor"]["motion_vae"]["w"])
    # the clip saw the trainable gradients only: norm sqrt(4 * 9) = 6 -> scaled by 1/6
    np.testing.assert_allclose(u["extractor"]["w"], [-0.5, -0.5], rtol=1e-6)
    # Adam's moments exist for the two trainable parameters only (2 x mu, nu of shape [2]), not the frozen two
    moments = [x for x in jax.tree.leaves(freeze(optax.adam(1.0), "motion").init(params)) if np.ndim(x) == 1]
    assert len(moments) == 4

@pytest.mark.slow

def test_train_consumes_a_sharded_arrays_loader(tmp_path):
    """Clips written once to disk shards (jaxzoo.data) and streamed by a grain loader into tora.train; a
    resumed run sees the same batches (its grain state is checkpointed) and ends where one run ends."""
    import tora
    from jaxzoo import data

    r = np.random.default_rng(0)
    cfg = STDiTConfig.tiny(depth=1, hidden_size=16)
    clips = {"x": r.normal(size=(12, 2, 4, 4, 4)).astype(np.float32),
             "y": r.normal(size=(12, 3, cfg.caption_channels)).astype(np.float32)}
    data.write_array_shards(tmp_path / "clips", [clips], rows_per_shard=5)  # written once
    run = RunConfig.tiny(cfg, steps=4, batch_size=2)

    def loader():
        return iter(data.make_loader(data.ShardedArrays(tmp_path / "clips"), batch_size=2, seed=1))

    full, hist = tora.train(run, loader(), workdir=tmp_path / "a", log_every=1, progress=False)
    assert len(hist) == 4 and all(np.isfinite(h["loss"]) for h in hist)
    tora.train(run, loader(), workdir=tmp_path / "b", num_steps=2, checkpoint_every=2, log_every=1, progress=False)
    resumed, _ = tora.train(run, loader(), workdir=tmp_path / "b", log_every=1, progress=False)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), resumed.params, full.params)

@pytest.mark.slow

def test_flops_per_example_matches_xla_and_reaches_fit():
    import tora
    from jaxzoo.flops import xla_flops
    from tora.config import FlowConfig
    from tora.train import init_state, loss_fn

    # remat="none": XLA then runs exactly forward + backward (block remat adds one more forward, 4x)
    cfg = STDiTConfig.tiny(depth=1, hidden_size=128, num_heads=2, caption_channels=32, remat="none")
    run = RunConfig(model=cfg, flow=FlowConfig(caption_dropout=0.0), batch_size=2)
    state = init_state(run).state
    batch = {"x": jnp.ones((2, 4, 16, 16, 4)), "y": jnp.ones((2, 4, 32))}
    lf = loss_fn(run)
    xla = xla_flops(lambda p, b, k: jax.grad(lambda q: lf(q, b, k)[0])(p), state.params, batch, jax.random.key(0))
    ours = 2 * tora.flops_per_example(cfg, (4, 16, 16), caption_len=4)
    assert abs(ours / xla - 1) < 0.2, (ours, xla)
    assert tora.flops_per_example(run, (4, 16, 16), 4) == ours / 2  # a RunConfig reads its model
    with pytest.raises(ValueError, match="latent_shape must be three positive sizes"):
        tora.flops_per_example(cfg, (4, 16))
    with pytest.raises(ValueError, match="counts ST-DiT and Tora models"):
        tora.flops_per_example(tora.VAEConfig.tiny(), (1, 4, 4))
    small = RunConfig.tiny(STDiTConfig.tiny(depth=1, hidden_size=16), steps=2, batch_size=2)
    get = lambda s: {"x": np.ones((2, 1, 4, 4, 4), np.float32), "y": np.ones((2, 3, 16), np.float32)}
    _, hist = tora.train(small, get, log_every=1, progress=False)
    want = 2 * tora.flops_per_example(small.model, (1, 4, 4), 3)
    assert hist[-1]["flops_per_s"] == pytest.approx(hist[-1]["examples_per_s"] / 2 * want)
