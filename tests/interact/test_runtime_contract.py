"""interact on the shared runtime: sharded state and step, config round trips, rebuild and resume."""

import dataclasses

import jax
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding

import interact as it
import jaxzoo


def tiny_data(n=32, features=8, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32)


def specs(tree):
    return jax.tree.map(lambda s: tuple(s.spec), tree, is_leaf=lambda s: isinstance(s, NamedSharding))


def mirrored_specs(run_cfg, state):
    """Specs of the optimizer leaves that mirror parameters, as a list of param-shaped trees."""
    tx = it.make_optimizer(run_cfg)
    found = []
    optax.tree_map_params(
        tx, lambda leaf: found.append(tuple(leaf.sharding.spec)) or leaf, state.opt_state,
        transform_non_params=lambda x: x,
    )  # fmt: skip
    return found


def param_specs(state):
    return [tuple(p.sharding.spec) for p in jax.tree.leaves(state.params)]


def run_steps(run_cfg, num, mesh=None, zero1=False):
    plan = it.init_state(run_cfg, mesh=mesh, zero1=zero1)
    step = it.make_train_step(run_cfg, mesh=mesh, state_sharding=plan.shardings)
    batches = it.batch_fn(run_cfg, tiny_data())
    state, losses = plan.state, []
    for s in range(num):
        state, metrics = step(state, batches(s), jax.random.key(0))
        losses.append(float(metrics["loss"]))
    return plan, state, losses


@pytest.mark.parametrize("zero1", [False, True])
def test_sharded_state_and_step_equal_single_device(zero1):
    run_cfg = it.RunConfig.tiny()
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    plan, state, losses = run_steps(run_cfg, 3, mesh=mesh, zero1=zero1)
    # the hidden layer is split over "model"; the head ("out") is replicated
    assert plan.shardings.params["dense_0"]["kernel"].spec == jax.sharding.PartitionSpec(None, "model")
    assert plan.shardings.params["dense_1"]["kernel"].spec == jax.sharding.PartitionSpec("model", None)
    n_params = len(jax.tree.leaves(state.params))
    for st in (plan.abstract, state):
        got = mirrored_specs(run_cfg, st)
        assert len(got) == 2 * n_params  # Adam's mu and nu
        want = param_specs(state)
        for mu_or_nu in (got[:n_params], got[n_params:]):
            for p_spec, o_spec, p in zip(want, mu_or_nu, jax.tree.leaves(state.params)):
                if not zero1:
                    assert o_spec == p_spec
                    continue
                # ZeRO-1: "data" added on the first free dimension that 4 divides, else as the parameter
                free = [
                    d for d in range(p.ndim) if (p_spec + (None,) * p.ndim)[d] is None and p.shape[d] % 4 == 0
                ]
                padded = o_spec + (None,) * (p.ndim - len(o_spec))
                if free:
                    assert padded[free[0]] == "data"
                    assert all(
                        padded[d] == (p_spec + (None,) * p.ndim)[d] for d in range(p.ndim) if d != free[0]
                    )
                else:
                    assert o_spec == p_spec
    if zero1:
        assert any("data" in s for s in mirrored_specs(run_cfg, state))
    _, single, single_losses = run_steps(run_cfg, 3)
    np.testing.assert_allclose(losses, single_losses, atol=1e-6, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-6),
        state.params, single.params,
    )  # fmt: skip


CONFIGS = [
    it.MLPConfig(),
    it.MLPConfig.tiny(),
    it.MLPConfig.digits(),
    it.MLPConfig(num_features=32, hidden=(64, 64), num_classes=4, precision=jaxzoo.Precision.of("float64")),
    it.RunConfig(),
    it.RunConfig.tiny(),
    it.RunConfig.digits(),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_config_round_trip(cfg, tmp_path):
    assert type(cfg).from_json(cfg.to_json()) == cfg
    hash(cfg)
    cfg.save(tmp_path)
    assert jaxzoo.load_config(tmp_path) == cfg
    data = cfg.to_dict()
    with pytest.raises(ValueError, match="no field"):
        type(cfg).from_dict({**data, "colour": 1})
    first = dataclasses.fields(cfg)[0].name
    with pytest.raises(ValueError, match="lacks field"):
        type(cfg).from_dict({k: v for k, v in data.items() if k != first})


def test_rebuild_continues_exactly(tmp_path):
    run_cfg = it.RunConfig.tiny().replace(steps=6)
    data = tiny_data()
    full, _ = it.train(run_cfg, data, progress=False)
    half, history = it.train(run_cfg, data, workdir=tmp_path, stop_at=3, log_every=1, progress=False)
    assert [r["step"] for r in history] == [1, 2, 3]
    run = jaxzoo.rebuild(tmp_path)
    assert run.config == run_cfg and run.step == 3 and isinstance(run.model, it.MLP)
    step = it.make_train_step(run.config)
    state, history = jaxzoo.fit(
        run.state, step, it.batch_fn(run_cfg, data), num_steps=6, rng=jax.random.key(run_cfg.seed),
        workdir=tmp_path, config=run_cfg, log_every=1, progress=False,
    )  # fmt: skip
    assert [r["step"] for r in history] == [1, 2, 3, 4, 5, 6]
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-6),
        state.params, full.params,
    )  # fmt: skip
    # train() resumes the same folder too (nothing left to do: already at the last step)
    again, _ = it.train(run_cfg, data, workdir=tmp_path, progress=False)
    assert int(again.step) == 6


def test_resume_with_other_config_raises(tmp_path):
    run_cfg = it.RunConfig.tiny().replace(steps=4)
    it.train(run_cfg, tiny_data(), workdir=tmp_path, stop_at=2, progress=False)
    with pytest.raises(ValueError, match="another config"):
        it.train(run_cfg.replace(batch_size=4), tiny_data(), workdir=tmp_path, progress=False)


def test_train_learns_and_evaluates():
    run_cfg = it.RunConfig.tiny().replace(steps=40, batch_size=16)
    data = tiny_data()
    before = it.evaluate(run_cfg, it.init_state(run_cfg).state.params, data)
    state, history = it.train(run_cfg, data, progress=False)
    after = it.evaluate(run_cfg, state.params, data)
    assert after["loss"] < before["loss"]
    assert history[-1]["step"] == 40 and len(history) == 4  # log_every=10


def test_sharding_examples_cover_modules():
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    names = [name for name, _, _ in it.sharding_examples()]
    assert names == ["MLP"]
    for _, module, args in it.sharding_examples():
        jaxzoo.init_sharded(module, jax.random.key(0), *args, mesh=mesh)
        abstract = jax.eval_shape(module.init, jax.random.key(0), *args)
        assert jaxzoo.check_axis_names(abstract) <= set(jaxzoo.AXES)


def test_errors():
    with pytest.raises(ValueError, match="batch_size"):
        it.RunConfig(batch_size=0)
    with pytest.raises(ValueError, match="exceeds"):
        it.batch_fn(it.RunConfig.tiny().replace(batch_size=64), tiny_data())
    with pytest.raises(ValueError, match="reads 8 features"):
        it.batch_fn(it.RunConfig.tiny(), tiny_data(features=5))
    with pytest.raises(ValueError, match="stop_at"):
        it.train(it.RunConfig.tiny(), tiny_data(), stop_at=11, progress=False)
