"""The Tora model: identity at init, frozen backbone, two-stage loss, CFG with motion, sharding."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxzoo
from tora.config import FlowConfig
from tora.sample import make_sampler
from tora.stdit import STDiT
from tora.synthetic import caption_features, make_batch
from tora.tora_model import (
    Tora,
    ToraConfig,
    check_tora_inputs,
    freeze,
    load_base_params,
    make_tora_loss_fn,
    make_tora_sampler,
    motion_condition,
    trainable_mask,
)
from tora.trajectory import sample_sparse_tracks, splat_and_blur

B, T, H, W = 2, 4, 8, 8
FLOW = FlowConfig(use_timestep_transform=False)


def _inputs(seed=0, b=B):
    ks = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(ks[0], (b, T, H, W, 3))
    t = jax.random.uniform(ks[1], (b,))
    y = jax.random.normal(ks[2], (b, 3, 16))
    rgb = jax.random.uniform(ks[3], (b, T, H, W, 3), minval=-1, maxval=1)
    return x, t, y, rgb


def _trained_like(params, seed=9, scale=0.1):
    """Add noise to every ST-DiT parameter outside the fusers: a fresh Open-Sora init zeroes the temporal
    blocks' output projections, which would hide (and block gradients to) anything fused before them."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    noisy = [
        a + scale * jax.random.normal(jax.random.key(seed + i), a.shape)
        if "extractor" not in jax.tree_util.keystr(p) and "motion_fuser" not in jax.tree_util.keystr(p)
        else a
        for i, (p, a) in enumerate(leaves)
    ]
    return jax.tree.unflatten(jax.tree.structure(params), noisy)


def _init(cfg, seed=0):
    x, t, y, rgb = _inputs()
    model = Tora(cfg)
    v = nn.meta.unbox(jax.jit(model.init)(jax.random.key(seed), x, t, y, rgb))
    return model, {**v, "params": _trained_like(v["params"])}


def _batch(seed=0, b=4, stage=None):
    d = make_batch(seed, b, T, H, W, radius=1.5)
    out = {
        "x": jnp.asarray(d["video"]),
        "y": jnp.asarray(caption_features(d["tokens"][:, :3], 16)),
        "flow": jnp.asarray(d["flow"]),
    }
    if stage is not None:
        out["stage"] = jnp.full((b,), stage, jnp.int32)
    return out


def _small(fuser="adanorm", **kw):
    """One block pair (compile time dominates these tests); the fuser hook is the same at any depth."""
    cfg = ToraConfig.tiny(fuser, max_tracks=3, track_stride=2, **kw)
    return dataclasses.replace(
        cfg,
        stdit=dataclasses.replace(cfg.stdit, depth=1),
        extractor=dataclasses.replace(cfg.extractor, num_levels=1),
    )


# ----------------------------------------------------------------------------- identity at init
@pytest.mark.parametrize(
    "fuser,position",
    [
        ("adanorm", "temporal"),
        # The other variants also have a module-level identity test in test_motion.py; the whole-model
        # check of them runs in CI's slow pass to keep the default suite under 15 minutes on 2 cores.
        pytest.param("channel", "temporal", marks=pytest.mark.slow),
        pytest.param("cross_attention", "temporal", marks=pytest.mark.slow),
        pytest.param("adanorm", "spatial", marks=pytest.mark.slow),
    ],
)
@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_tora_equals_base_stdit_at_init(fuser, position):
    cfg = _small(fuser)
    cfg = dataclasses.replace(cfg, stdit=dataclasses.replace(cfg.stdit, motion_position=position))
    model, v = _init(cfg)
    x, t, y, rgb = _inputs(1)
    base = STDiT(cfg.stdit)
    base_vars = nn.meta.unbox(jax.jit(base.init)(jax.random.key(5), x, t, y))
    base_vars = {"params": _trained_like(base_vars["params"], seed=50)}
    params = load_base_params(v["params"], base_vars["params"])
    fused = {"params": params, "batch_stats": v["batch_stats"]}
    want = jax.jit(base.apply)(base_vars, x, t, y)
    got = jax.jit(model.apply)(fused, x, t, y, rgb)
    # Zero-initialised fusers add exact zeros; 1e-6 only allows XLA to fuse the two graphs differently.
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
    # The fuser sits where configured: one per block pair, in the chosen block kind.
    flat = jax.tree_util.tree_flatten_with_path(params["stdit"])[0]
    owners = {jax.tree_util.keystr(p[:1]) for p, _ in flat if "motion_fuser" in jax.tree_util.keystr(p)}
    assert len(owners) == cfg.stdit.depth and all(position in o for o in owners)
    # ... and the condition is live: perturb the motion path and the output moves with the flow.
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    moved = jax.tree_util.tree_unflatten(
        jax.tree.structure(params),
        [
            a + 0.2 * jax.random.normal(jax.random.key(i), a.shape)
            if "motion_fuser" in jax.tree_util.keystr(p)
            else a
            for i, (p, a) in enumerate(leaves)
        ],
    )
    out1 = jax.jit(model.apply)({**fused, "params": moved}, x, t, y, rgb)
    out2 = jax.jit(model.apply)({**fused, "params": moved}, x, t, y, -rgb)
    assert float(jnp.abs(out1 - want).max()) > 1e-3 and float(jnp.abs(out1 - out2).max()) > 1e-4


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_load_base_params_errors():
    cfg = _small()
    _, v = _init(cfg)
    with pytest.raises(ValueError, match="which the Tora model lacks"):
        load_base_params(v["params"], {"nope": jnp.zeros(3)})
    bad = {"final_layer": {"linear": {"bias": jnp.zeros(5)}}}
    with pytest.raises(ValueError, match="has shape"):
        load_base_params(v["params"], bad)


# ----------------------------------------------------------------------------- training
@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_trainable_mask_and_frozen_backbone():
    cfg = _small()
    model, v = _init(cfg)
    masks = {m: trainable_mask(v["params"], m) for m in ("motion", "motion+temporal", "all")}
    keyed = lambda tree: {
        jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }
    motion = keyed(masks["motion"])
    assert all(motion[k] == ("extractor" in k or "motion_fuser" in k) for k in motion)
    temporal = keyed(masks["motion+temporal"])
    assert any(temporal[k] and "temporal_blocks_0" in k and "motion_fuser" not in k for k in temporal)
    assert not any(temporal[k] for k in temporal if "spatial_blocks" in k)
    assert all(keyed(masks["all"]).values())
    with pytest.raises(ValueError, match="trainable must be one of"):
        trainable_mask(v["params"], "fusers")

    tx = freeze(optax.adam(1e-2), "motion")
    state = jaxzoo.TrainState.create(v["params"], tx, extra={"batch_stats": v["batch_stats"]})
    step = jaxzoo.make_train_step(make_tora_loss_fn(model, FLOW, stage=2), tx, has_extra=True, donate=False)
    new, metrics = step(state, _batch(), jax.random.key(0))
    before, after = keyed(state.params), keyed(new.params)
    for k in before:
        changed = not np.array_equal(before[k], after[k])
        if "extractor" in k or "motion_fuser" in k:
            continue
        assert not changed, f"frozen parameter {k} moved"
    assert any(not np.array_equal(before[k], after[k]) for k in before if "motion_fuser" in k)
    assert np.isfinite(float(metrics["loss"]))
    # Batch statistics are carried in state.extra and updated by the training step.
    assert any(
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.extra), jax.tree.leaves(new.extra))
    )


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_training_with_motion_decreases_loss():
    cfg = _small("adanorm")
    model, v = _init(cfg)
    tx = freeze(optax.adam(3e-3), "motion")
    state = jaxzoo.TrainState.create(v["params"], tx, extra={"batch_stats": v["batch_stats"]})
    loss_fn = make_tora_loss_fn(model, FlowConfig(use_timestep_transform=False, caption_dropout=0.0))
    step = jaxzoo.make_train_step(loss_fn, tx, has_extra=True)
    batch = _batch(3, stage=1)
    key = jax.random.key(1)
    eval_loss = jax.jit(lambda s: loss_fn(s.params, s.extra, batch, key)[0])
    start = float(eval_loss(state))
    for _ in range(25):
        state, _ = step(state, batch, key)
    end = float(eval_loss(state))
    assert end < 0.98 * start, (start, end)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_motion_condition_stages():
    cfg = _small()
    flow = _batch(0, b=3)["flow"]
    key = jax.random.key(4)
    rgb1, f1 = motion_condition(key, flow, cfg, 1)
    np.testing.assert_array_equal(np.asarray(f1), np.asarray(flow))
    assert rgb1.shape == (3, T, H, W, 3)
    rgb2, f2 = motion_condition(key, flow, cfg, 2)
    keys = jax.random.split(key, 3)
    for i in range(3):  # stage 2 = the sampled tracks, splatted and blurred
        tracks, mask = sample_sparse_tracks(
            keys[i], flow[i], max_tracks=cfg.max_tracks, stride=cfg.track_stride
        )
        want = splat_and_blur(tracks, mask, T, H, W, sigma=cfg.sigma, kernel_size=cfg.kernel_size)
        np.testing.assert_allclose(np.asarray(f2[i]), np.asarray(want), atol=1e-6)
    _, fm = motion_condition(key, flow, cfg, jnp.array([1, 2, 1]))  # per-example stage, traced
    np.testing.assert_array_equal(np.asarray(fm[0]), np.asarray(flow[0]))
    np.testing.assert_allclose(np.asarray(fm[1]), np.asarray(f2[1]), atol=1e-6)
    with pytest.raises(ValueError, match="stage must be 1"):
        motion_condition(key, flow, cfg, 3)
    with pytest.raises(ValueError, match=r"\[B, F, H, W, 2\]"):
        motion_condition(key, flow[0], cfg, 1)


# ----------------------------------------------------------------------------- sampling
@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_sampler_puts_motion_into_both_cfg_passes():
    cfg = _small("channel")
    model, v = _init(cfg)
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: a + 0.3 if "motion_fuser" in jax.tree_util.keystr(p) else a, v["params"]
    )
    variables = {"params": params, "batch_stats": v["batch_stats"]}
    _, _, y, rgb = _inputs(2)
    sample = make_tora_sampler(model, FLOW)
    kw = dict(num_frames=T, height=H, width=W, num_steps=2)
    # guidance 0 = the unconditional pass alone: it must still see the motion.
    u1 = sample(variables, jax.random.key(0), y, rgb, guidance_scale=0.0, **kw)
    u2 = sample(variables, jax.random.key(0), y, -rgb, guidance_scale=0.0, **kw)
    assert float(jnp.abs(u1 - u2).max()) > 1e-4
    # Without flow, Tora samples exactly as its ST-DiT does.
    base = make_sampler(STDiT(cfg.stdit), FLOW)(
        params["stdit"], jax.random.key(0), y, guidance_scale=2.0, **kw
    )
    mine = sample(variables, jax.random.key(0), y, None, guidance_scale=2.0, **kw)
    np.testing.assert_array_equal(np.asarray(base), np.asarray(mine))


# ----------------------------------------------------------------------------- errors
def test_tora_config_and_input_errors():
    base = ToraConfig.tiny()
    with pytest.raises(ValueError, match="needs stdit.motion_fuser"):
        ToraConfig.tiny(stdit=dataclasses.replace(base.stdit, motion_fuser=None))
    with pytest.raises(ValueError, match="must equal the extractor's channels"):
        ToraConfig.tiny(extractor=dataclasses.replace(base.extractor, channels=8))
    with pytest.raises(ValueError, match="one level per block pair"):
        ToraConfig.tiny(extractor=dataclasses.replace(base.extractor, num_levels=3))
    with pytest.raises(ValueError, match="unshuffle"):
        ToraConfig.tiny(extractor=dataclasses.replace(base.extractor, unshuffle=4))
    with pytest.raises(ValueError, match="trainable must be one of"):
        ToraConfig.tiny(trainable="backbone")
    with pytest.raises(ValueError, match="odd"):
        ToraConfig.tiny(kernel_size=8)
    x, _, _, rgb = _inputs()
    with pytest.raises(ValueError, match="motion grid"):
        check_tora_inputs(base, x, rgb[:, :3])
    with pytest.raises(ValueError, match="stage must be 1"):
        make_tora_loss_fn(Tora(base), FLOW, stage=0)


# ----------------------------------------------------------------------------- sharding
@pytest.mark.slow  # 45 s of compiling on 2 cores; tests/tora/test_train.py covers the base step by default
def test_sharded_step_equals_single_device():
    cfg = _small("adanorm")
    model = Tora(cfg)
    x, t, y, rgb = _inputs(0, b=4)
    v = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), x, t, y, rgb))
    params = _trained_like(v["params"])
    tx = freeze(optax.adam(1e-2), "motion")
    loss_fn = make_tora_loss_fn(model, FLOW)
    batch = _batch(7, b=4, stage=2)
    rng = jax.random.key(3)

    single = jaxzoo.TrainState.create(params, tx, extra={"batch_stats": v["batch_stats"]})
    s1, m1 = jaxzoo.make_train_step(loss_fn, tx, has_extra=True, donate=False)(single, batch, rng)

    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    _, shardings = jaxzoo.init_sharded(model, jax.random.key(0), x, t, y, rgb, mesh=mesh)
    assert any(s.spec and any(a == "model" for a in s.spec) for s in jax.tree.leaves(shardings["params"]))
    sp = jax.device_put(params, shardings["params"])
    se = jax.device_put(v["batch_stats"], shardings["batch_stats"])
    state = jax.jit(lambda p, e: jaxzoo.TrainState.create(p, tx, extra={"batch_stats": e}))(sp, se)
    step = jaxzoo.make_train_step(loss_fn, tx, mesh=mesh, has_extra=True, donate=False)
    s2, m2 = step(state, jaxzoo.shard_batch(batch, mesh), rng)
    np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)  # reduction order
    for a, b in zip(jax.tree.leaves(s1.extra), jax.tree.leaves(s2.extra)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_fresh_backbone_warns(monkeypatch):
    import warnings

    import jaxzoo
    import tora
    from tora.tora_model import untrained_base_warning

    cfg = _small()
    run = tora.RunConfig.tiny(model=cfg, steps=1, batch_size=2, stage=1)
    plan = tora.init_state(run)
    assert "zero gradient" in untrained_base_warning(cfg, plan.state.params)
    assert untrained_base_warning(cfg, _trained_like(plan.state.params)) is None
    monkeypatch.setattr(jaxzoo, "fit", lambda state, *a, **k: (state, []))  # no training: only the check
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        tora.train(run, lambda s: _batch(b=2), num_steps=1, progress=False)
    assert any("Tora fine-tunes a trained base" in str(x.message) for x in w)


@pytest.mark.slow
def test_grad_norm_counts_trainable_parameters_only():
    import tora

    cfg = _small()
    run = tora.RunConfig.tiny(model=cfg, steps=1, batch_size=2, stage=1)
    plan = tora.init_state(run)
    step = tora.make_train_step(run, donate=False)
    _, m = step(plan.state, _batch(b=2), jax.random.key(0))
    # fresh backbone: the only trainable gradient is zero, and grad_norm says so (frozen grads not counted)
    assert float(m["grad_norm"]) == 0.0
    _, m2 = step(plan.state.replace(params=_trained_like(plan.state.params)), _batch(b=2), jax.random.key(0))
    assert float(m2["grad_norm"]) > 0
