"""tora on jaxzoo's runtime: the state planner shards optimizer leaves like their parameters, the
sharded step equals the single-device step, configs round-trip, and a work directory rebuilds and
continues exactly (or refuses another config)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxzoo
import tora
from tora.config import (
    FlowConfig,
    RunConfig,
    STDiTConfig,
    TextConfig,
    ToraConfig,
    TrajectoryExtractorConfig,
    VAEConfig,
)
from tora.vae_opensora import OpenSoraVAEConfig

# SGD with momentum keeps every step's update proportional to the gradient: Adam with Open-Sora's eps
# 1e-15 turns float-noise gradients (~1e-9, summed in another order across devices) into +-lr steps.
SGD = jaxzoo.OptimizerConfig(algorithm="sgd", learning_rate=0.1, b1=0.9, grad_clip=1.0, ema_decay=0.99,
                             warmup_steps=0)
RUN = RunConfig.tiny(optimizer=SGD, steps=4, flow=FlowConfig(caption_dropout=0.0))


def batch_fn(step, b=4):
    r = np.random.default_rng(step)
    c = RUN.model
    return {"x": r.normal(size=(b, 2, 4, 4, c.in_channels)).astype(np.float32),
            "y": r.normal(size=(b, 3, c.caption_channels)).astype(np.float32)}


def mirrored(tx, opt_state, params):
    """(optimizer leaf, its parameter) pairs for every optimizer leaf that mirrors a parameter."""
    pairs = []
    optax.tree_map_params(tx, lambda o, p: pairs.append((o, p)), opt_state, params,
                          transform_non_params=lambda _: None)
    return pairs


@pytest.fixture(scope="module")
def mesh():
    return jaxzoo.make_mesh({"data": 4, "model": 2})


def _steps(run, mesh, zero1, n=3):
    plan = tora.init_state(run, mesh=mesh, zero1=zero1)
    step = tora.make_train_step(run, mesh=mesh, state_sharding=plan.shardings, donate=False)
    state, losses = plan.state, []
    for i in range(n):
        batch = batch_fn(i) if mesh is None else jaxzoo.shard_batch(batch_fn(i), mesh)
        state, m = step(state, batch, jax.random.key(7))
        losses.append(float(m["loss"]))
    return plan, state, losses


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
@pytest.mark.parametrize("zero1,shard_sequence", [(False, False), (True, False), (False, True)])
def test_sharded_state_and_step_equal_single_device(mesh, zero1, shard_sequence):
    """Also with `shard_sequence` (tokens' H' axis over "model"): the step is traced with the mesh and the
    run's rules in force (jaxzoo.make_train_step(rules=)), so the activation constraint takes effect."""
    run = RUN.replace(model=RUN.model.replace(shard_sequence=shard_sequence))
    tx = tora.make_optimizer(run)
    _, want, want_losses = _steps(RUN, None, False)
    plan, got, losses = _steps(run, mesh, zero1)
    sharded = [p for p in jax.tree.leaves(plan.state.params) if "model" in str(p.sharding.spec)]
    assert sharded, "the tiny STDiT should have model-sharded parameters on a (data=4, model=2) mesh"
    for state in (plan.state, got):  # before and after steps
        pairs = mirrored(tx, state.opt_state, state.params)
        assert len(pairs) == 2 * len(jax.tree.leaves(state.params))  # momentum + EMA
        for o, p in pairs:
            if not zero1:
                assert o.sharding.is_equivalent_to(p.sharding, p.ndim), (o.sharding, p.sharding)
            else:
                spec = tuple(o.sharding.spec) + (None,) * (p.ndim - len(o.sharding.spec))
                pspec = tuple(p.sharding.spec) + (None,) * (p.ndim - len(p.sharding.spec))
                assert all(a == b or (a == "data" and b is None) for a, b in zip(spec, pspec))
                free = [d for d, b in enumerate(pspec) if b is None and p.shape[d] % 4 == 0 and p.shape[d] >= 4]
                assert ("data" in spec) == bool(free), (p.shape, spec, pspec)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got.params, want.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
                 jaxzoo.ema_params(got.opt_state), jaxzoo.ema_params(want.opt_state))


CONFIGS = [
    STDiTConfig(), STDiTConfig.tiny(), STDiTConfig.xl(), STDiTConfig.tiny(precision=jaxzoo.Precision.bf16(),
                                                                          patch_size=(2, 2, 2)),
    FlowConfig(), VAEConfig(), VAEConfig.tiny(), TextConfig(), TextConfig.tiny(),
    TrajectoryExtractorConfig(), TrajectoryExtractorConfig.tiny(), ToraConfig(), ToraConfig.tiny(),
    ToraConfig.tiny("cross_attention"), RunConfig(), RunConfig.tiny(), RunConfig.tiny(model=ToraConfig.tiny()),
    RunConfig.tiny(model=VAEConfig.tiny(), stage=None), RunConfig.tiny(model=ToraConfig.tiny(), stage=2),
    OpenSoraVAEConfig(), OpenSoraVAEConfig.v1_2(), OpenSoraVAEConfig.tiny(),
    OpenSoraVAEConfig.tiny().replace(micro_frame_size=None), tora.SDVAEConfig(), tora.TemporalVAEConfig(),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_configs_round_trip(cfg):
    back = type(cfg).from_json(cfg.to_json())
    assert back == cfg and type(back) is type(cfg) and hash(back) == hash(cfg)
    assert jaxzoo.Config.from_json(cfg.to_json()) == cfg  # the JSON names its class
    data = cfg.to_dict()
    with pytest.raises(ValueError, match="has no field"):
        type(cfg).from_dict({**data, "bogus": 1})
    first = next(k for k in data if not k.startswith("__"))
    with pytest.raises(ValueError, match="lacks field"):
        type(cfg).from_dict({k: v for k, v in data.items() if k != first})


def test_run_config_keeps_the_model_kind():
    for model in (STDiTConfig.tiny(), ToraConfig.tiny(), VAEConfig.tiny()):
        back = RunConfig.from_json(RunConfig.tiny(model=model).to_json())
        assert type(back.model) is type(model) and back.model == model
    assert isinstance(STDiTConfig.from_json(STDiTConfig.tiny().to_json()).patch_size, tuple)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_workdir_rebuilds_and_continues_exactly(tmp_path):
    run = RUN.replace(steps=4)
    rng = jax.random.key(3)
    want, _ = tora.train(run, batch_fn, rng=rng, progress=False)
    tora.train(run, batch_fn, workdir=tmp_path, num_steps=2, rng=rng, log_every=1, progress=False)
    rebuilt = jaxzoo.rebuild(tmp_path)
    assert rebuilt.config == run and rebuilt.step == 2 and isinstance(rebuilt.model, tora.STDiT)
    step = tora.make_train_step(rebuilt.config)
    got, history = jaxzoo.fit(rebuilt.state, step, batch_fn, num_steps=4, rng=rng, workdir=tmp_path,
                              config=run, log_every=1, progress=False)
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got.params, want.params)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_resuming_with_another_config_raises(tmp_path):
    tora.train(RUN, batch_fn, workdir=tmp_path, num_steps=1, progress=False)
    with pytest.raises(ValueError, match="another config"):
        tora.train(RUN.replace(seed=1), batch_fn, workdir=tmp_path, progress=False)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_tora_run_trains_only_the_motion_path():
    cfg = ToraConfig.tiny(stdit=STDiTConfig.tiny(depth=1, in_channels=3, vae_spatial_factor=1,
                                                 motion_fuser="adanorm", motion_channels=16),
                          extractor=TrajectoryExtractorConfig.tiny(num_levels=1), max_tracks=2, track_stride=2)
    run = RunConfig.tiny(model=cfg, stage=1, flow=FlowConfig(use_timestep_transform=False))
    fresh = tora.init_state(run).state.params
    # A fresh Open-Sora init zeroes the temporal blocks' output projections, which blocks every gradient to
    # the fusers and the extractor: start from "trained" backbone weights, as Tora does (params=).
    keys = jax.random.split(jax.random.key(1), len(jax.tree.leaves(fresh)))
    params = jax.tree.unflatten(jax.tree.structure(fresh), [
        a if "extractor" in jax.tree_util.keystr(p) or "motion_fuser" in jax.tree_util.keystr(p)
        else a + 0.1 * jax.random.normal(k, a.shape)
        for (p, a), k in zip(jax.tree_util.tree_flatten_with_path(fresh)[0], keys)])
    plan = tora.init_state(run, params=params)
    assert set(plan.state.extra) == {"batch_stats"}
    r = np.random.default_rng(0)
    batch = {"x": jnp.asarray(r.normal(size=(2, 2, 4, 4, 3)), jnp.float32),
             "y": jnp.asarray(r.normal(size=(2, 3, 16)), jnp.float32),
             "flow": jnp.asarray(r.normal(size=(2, 2, 4, 4, 2)), jnp.float32)}
    before = jax.tree.map(np.asarray, plan.state.params)
    state, m = tora.make_train_step(run, donate=False)(plan.state, batch, jax.random.key(0))
    assert np.isfinite(float(m["loss"]))
    moved = {jax.tree_util.keystr(k): not np.array_equal(a, b) for (k, a), b in
             zip(jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(state.params))}
    assert not any(v for k, v in moved.items() if "extractor" not in k and "motion_fuser" not in k)
    assert any(v for k, v in moved.items() if "motion_fuser" in k)
