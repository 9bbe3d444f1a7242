"""sae on the shared runtime: sharded state and step, ZeRO-1, config round trips, rebuild and resume."""

import dataclasses
import json

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import jaxzoo
import sae
from sae import training as sae_train

TOL = dict(rtol=1e-6, atol=1e-6)
RUN = sae.RunConfig.tiny()  # d_in 16, d_sae 32, TopK k 4, 6 steps of 128


def toy(n=1024, seed=0):
    x, _ = sae.toy.superposition_data(n, d_in=16, n_features=32, avg_active=3, seed=seed)
    return x


def adam_state(opt_state):
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    ]
    assert len(found) == 1
    return found[0]


def assert_moments_like_params(state):
    adam = adam_state(state.opt_state)
    for name, p in state.params.items():
        for moments in (adam.mu, adam.nu):
            assert moments[name].sharding.is_equivalent_to(p.sharding, p.ndim), (name, moments[name].sharding)


@pytest.fixture(scope="module")
def mesh():
    return jaxzoo.make_mesh({"data": 4, "model": 2})


def test_sharded_state_and_step_match_single_device(mesh):
    x = toy()
    sample = x[:256]
    single = sae.init_state(RUN, sample=sample).state
    plan = sae.init_state(RUN, sample=sample, mesh=mesh)
    sharded = plan.state
    assert sharded.params["W_enc"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert sharded.params["W_dec"].sharding.spec == jax.sharding.PartitionSpec("model", None)
    assert sharded.extra["tokens_since_fired"].sharding.spec == jax.sharding.PartitionSpec("model")
    assert_moments_like_params(sharded)
    step = sae.make_train_step(RUN)
    sharded_step = sae.make_train_step(RUN, mesh=mesh, state_sharding=plan.shardings)
    for i in range(3):
        batch = x[i * 128 : (i + 1) * 128]
        single, m1 = step(single, batch, jax.random.key(1))
        sharded, m2 = sharded_step(sharded, jaxzoo.shard_batch(batch, mesh), jax.random.key(1))
        np.testing.assert_allclose(m1["loss"], m2["loss"], **TOL)
        assert_moments_like_params(sharded)
    for k in single.params:
        np.testing.assert_allclose(single.params[k], sharded.params[k], err_msg=k, **TOL)


def test_zero1_shards_moments_over_data_and_matches(mesh):
    x = toy()
    sample = x[:256]
    plan = sae.init_state(RUN, sample=sample, mesh=mesh, zero1=True)
    adam = adam_state(plan.state.opt_state)
    for name, p in plan.state.params.items():
        free = [
            d
            for d, size in enumerate(p.shape)
            if (p.sharding.spec + (None,) * p.ndim)[d] is None and size % 4 == 0
        ]
        for moments in (adam.mu, adam.nu):
            spec = moments[name].sharding.spec
            assert ("data" in spec) == bool(free), (name, spec)
    single = sae.init_state(RUN, sample=sample).state
    step = sae.make_train_step(RUN)
    sharded_step = sae.make_train_step(RUN, mesh=mesh, state_sharding=plan.shardings)
    state = plan.state
    for i in range(3):
        batch = x[i * 128 : (i + 1) * 128]
        single, m1 = step(single, batch, jax.random.key(1))
        state, m2 = sharded_step(state, jaxzoo.shard_batch(batch, mesh), jax.random.key(1))
        np.testing.assert_allclose(m1["loss"], m2["loss"], **TOL)
    assert "data" in adam_state(state.opt_state).mu["W_enc"].sharding.spec
    for k in single.params:
        np.testing.assert_allclose(single.params[k], state.params[k], err_msg=k, **TOL)


CONFIGS = {
    "SAEConfig()": sae.SAEConfig(),
    **{f"SAEConfig.tiny({a})": sae.SAEConfig.tiny(a) for a in sae.ARCHITECTURES},
    "SAEConfig.toy()": sae.SAEConfig.toy(),
    "SAEConfig.minilm()": sae.SAEConfig.minilm(),
    "SAEConfig.gemmascope()": sae.SAEConfig.gemmascope(),
    "SAEConfig(k_aux, unit_norm)": sae.SAEConfig(k_aux=7, unit_norm_decoder=False),
    "RunConfig()": sae.RunConfig(),
    "RunConfig.tiny()": sae.RunConfig.tiny(),
    "RunConfig(lr)": sae.RunConfig(
        model=sae.SAEConfig.toy(),
        optimizer=sae.default_optimizer(sae.SAEConfig.toy(), 3e-3),
        steps=10,
        batch_size=64,
        seed=3,
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_round_trip(name):
    cfg = CONFIGS[name]
    back = type(cfg).from_json(cfg.to_json())
    assert back == cfg and type(back) is type(cfg)
    assert hash(back) == hash(cfg)
    data = json.loads(cfg.to_json())
    with pytest.raises(ValueError, match="no field"):
        type(cfg).from_dict({**data, "bogus": 1})
    first = next(f.name for f in dataclasses.fields(cfg))
    with pytest.raises(ValueError, match="lacks field"):
        type(cfg).from_dict({k: v for k, v in data.items() if k != first})


def test_run_config_default_learning_rate_rule():
    model = sae.SAEConfig(d_sae=4096)
    assert sae.RunConfig(model=model).optimizer.learning_rate == pytest.approx(2e-4 / np.sqrt(4096 / 2**14))
    run = sae.run_config(model, steps=5, batch_size=8, learning_rate=1e-3)
    assert run.optimizer.learning_rate == 1e-3 and run.optimizer.algorithm == "adam"


def _fit(state, steps, batches, workdir=None):
    return jaxzoo.fit(
        state,
        sae.make_train_step(RUN),
        batches,
        num_steps=steps,
        rng=jax.random.key(0),
        workdir=workdir,
        config=RUN,
        log_every=1,
        progress=False,
    )

@pytest.mark.slow

def test_rebuild_from_workdir_continues_exactly(tmp_path):
    x = toy()
    sample, batches = sae_train._init_sample(x, RUN.model, RUN.batch_size, RUN.seed)
    full, _ = _fit(sae.init_state(RUN, sample=sample).state, 6, batches)
    _fit(sae.init_state(RUN, sample=sample).state, 3, batches, workdir=tmp_path)
    run = jaxzoo.rebuild(tmp_path)
    assert run.config == RUN and run.step == 3 and isinstance(run.model, sae.SAE)
    resumed, history = _fit(run.state, 6, batches, workdir=tmp_path)
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    for k in full.params:
        np.testing.assert_allclose(full.params[k], resumed.params[k], err_msg=k, **TOL)


def test_resuming_with_another_run_config_raises(tmp_path):
    x = toy()
    sae.train(RUN, x, workdir=tmp_path, progress=False)
    other = RUN.replace(seed=1)
    with pytest.raises(ValueError, match="another config"):
        sae.init_state(other, sample=x[:256], workdir=tmp_path)
    with pytest.raises(ValueError, match="another config"):
        sae.train(other, x, workdir=tmp_path, progress=False)


def test_sharding_examples_cover_the_modules(mesh):
    examples = sae.sharding_examples()
    modules = {type(m).__name__ for _, m, _ in examples}
    assert modules == {"SAE"}
    for name, module, args in examples:
        boxed = jax.eval_shape(module.init, jax.random.key(0), *args)
        jaxzoo.check_axis_names(boxed)
        variables, shardings = jaxzoo.init_sharded(module, jax.random.key(0), *args, mesh=mesh)
        assert shardings["params"]["W_dec"].spec == jax.sharding.PartitionSpec("model", None), name
        assert not any(isinstance(v, nn.LogicallyPartitioned) for v in jax.tree.leaves(variables))
