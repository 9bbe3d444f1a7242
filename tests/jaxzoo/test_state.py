"""The state planner: shardings of params and optimizer state (ZeRO-1 too), restore-or-init, rebuild,
bytes per device, resume refusing another config, donated-state errors, fit's metric fetches."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import jaxzoo
import jaxzoo.train as zt


class Net(nn.Module):
    config: "NetConfig"

    @nn.compact
    def __call__(self, x):  # [B, d_in] -> [B, d_out]
        h = jaxzoo.DenseGeneral((self.config.hidden,), ("embed", "mlp"), name="fc1")(x)
        return jaxzoo.DenseGeneral((self.config.d_out,), ("mlp", "embed"), name="fc2")(jnp.tanh(h))


@dataclasses.dataclass(frozen=True)
class NetConfig(jaxzoo.Config):
    """A two-layer net for the runtime tests."""

    d_in: int = 8  # inputs
    hidden: int = 16  # hidden units (sharded over "model")
    d_out: int = 4  # outputs


@dataclasses.dataclass(frozen=True)
class NetRun(jaxzoo.Config):
    """A run of Net: model and optimizer; rebuildable from its work directory."""

    model: NetConfig = NetConfig()  # the network
    optimizer: jaxzoo.OptimizerConfig = jaxzoo.OptimizerConfig(learning_rate=1e-2, weight_decay=0.01)  # AdamW
    steps: int = 10  # total steps

    def recipe(self):
        model = Net(self.model)
        init = jaxzoo.module_init(model, jnp.zeros((1, self.model.d_in)))
        return jaxzoo.Recipe(model, init, jaxzoo.make_optimizer(self.optimizer, self.steps))


RUN = NetRun()


def loss_fn(params, batch, rng):
    pred = Net(RUN.model).apply({"params": params}, batch["x"])
    return jnp.mean((pred - batch["y"]) ** 2), {}


def make_batch(step):
    r = np.random.default_rng(step)
    x = r.normal(size=(8, 8)).astype(np.float32)
    return {"x": x, "y": np.sin(x[:, :4])}


def plan(mesh=None, **kw):
    recipe = RUN.recipe()
    return jaxzoo.plan_state(recipe.init_fn, recipe.tx, jax.random.key(0), mesh=mesh, **kw)


def adam(opt_state):
    """The ScaleByAdamState inside an optimizer state."""
    return next(s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
                if isinstance(s, optax.ScaleByAdamState))


def mirrored_specs(state, tx):
    """(param spec, optimizer-leaf spec) for every optimizer leaf that mirrors a parameter."""
    out = []
    specs = jax.tree.map(lambda x: x.sharding.spec, state.params)
    optax.tree_map_params(tx, lambda leaf, spec: out.append((spec, leaf.sharding.spec)) or leaf,
                          state.opt_state, specs, is_leaf=lambda x: isinstance(x, P))
    return out


def test_optimizer_state_follows_parameter_shardings_before_and_after_a_step():
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    p = plan(mesh)
    tx = RUN.recipe().tx
    assert p.state.params["fc1"]["kernel"].sharding.spec == P(None, "model")
    pairs = mirrored_specs(p.state, tx)
    assert len(pairs) == 2 * 4  # mu and nu of four parameters
    assert all(ps == os for ps, os in pairs)
    step = jaxzoo.make_train_step(loss_fn, tx, mesh=mesh, state_sharding=p.shardings)
    state, _ = step(p.state, jaxzoo.shard_batch(make_batch(0), mesh), jax.random.key(1))
    assert all(ps == os for ps, os in mirrored_specs(state, tx))
    assert adam(state.opt_state).count.sharding.spec == P()


@pytest.mark.parametrize("zero1", [False, True])
def test_sharded_step_equals_single_device(zero1):
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    tx = RUN.recipe().tx
    ps, pu = plan(mesh, zero1=zero1), plan()
    step_s = jaxzoo.make_train_step(loss_fn, tx, mesh=mesh, state_sharding=ps.shardings)
    step_u = jaxzoo.make_train_step(loss_fn, tx)
    s, u = ps.state, pu.state
    for i in range(4):
        s, ms = step_s(s, jaxzoo.shard_batch(make_batch(i), mesh), jax.random.key(2))
        u, mu = step_u(u, make_batch(i), jax.random.key(2))
        np.testing.assert_allclose(ms["loss"], mu["loss"], rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(u.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    mu_kernel = adam(s.opt_state).mu["fc1"]["kernel"]
    assert mu_kernel.sharding.spec == (P("data", "model") if zero1 else P(None, "model"))


def test_zero1_memory_is_smaller_and_counted_per_device():
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    full = plan(mesh).memory()
    z = plan(mesh, zero1=True).memory()
    single = plan().memory()
    assert single["params"] == 4 * (8 * 16 + 16 + 16 * 4 + 4)
    assert full["params"] == 4 * (8 * 8 + 8 + 8 * 4 + 4)  # hidden split over model=2
    assert full["opt_state"] == 2 * full["params"] + 4 + 4  # mu, nu + two int32 counts
    assert z["opt_state"] < full["opt_state"]
    abstract = plan(mesh, abstract_only=True)  # nothing allocated, same plan
    assert abstract.state is None and abstract.memory() == full


def test_pretrained_params_are_placed_and_checked():
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    params = jax.tree.map(lambda x: x + 1.0, plan().state.params)
    p = plan(mesh, params=params)
    np.testing.assert_array_equal(np.asarray(p.state.params["fc2"]["bias"]), np.ones(4))
    assert adam(p.state.opt_state).mu["fc1"]["kernel"].sharding.spec == P(None, "model")
    bad = {**params, "fc2": {**params["fc2"], "bias": np.zeros(5, np.float32)}}
    with pytest.raises(ValueError, match=r"params\['fc2'\]\['bias'\] has shape \(5,\); the model expects \(4,\)"):
        plan(params=bad)


def test_extra_collections_are_replicated_or_named():
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    p = plan(mesh, extra={"count": jnp.zeros((), jnp.int32), "seen": jnp.zeros(16)})
    assert p.state.extra["seen"].sharding.spec == P()
    named = nn.with_logical_partitioning(lambda: jnp.zeros(16), ("mlp",))()
    p = plan(mesh, extra=lambda rng: {"seen": named})
    assert p.state.extra["seen"].sharding.spec == P("model")


def test_rebuild_from_workdir_continues_exactly(tmp_path):
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    tx = RUN.recipe().tx
    step = jaxzoo.make_train_step(loss_fn, tx, mesh=mesh)
    batches = lambda s: jaxzoo.shard_batch(make_batch(s), mesh)
    rng = jax.random.key(3)
    full, _ = jaxzoo.fit(plan(mesh).state, step, batches, num_steps=10, rng=rng, progress=False)
    half, _ = jaxzoo.fit(plan(mesh).state, step, batches, num_steps=5, rng=rng, progress=False,
                         workdir=tmp_path, config=RUN)
    run = jaxzoo.rebuild(tmp_path, mesh=mesh)
    assert run.config == RUN and run.step == 5 and isinstance(run.model, Net)
    assert adam(run.state.opt_state).mu["fc1"]["kernel"].sharding.spec == P(None, "model")
    resumed, _ = jaxzoo.fit(run.state, step, batches, num_steps=10, rng=rng, progress=False,
                            workdir=tmp_path, config=RUN)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    # plan_state with the workdir restores the same state
    again = plan(mesh, workdir=tmp_path, config=RUN)
    assert again.restored_step == 10


def test_resume_with_another_config_is_refused(tmp_path):
    tx = RUN.recipe().tx
    step = jaxzoo.make_train_step(loss_fn, tx)
    jaxzoo.fit(plan().state, step, make_batch, num_steps=2, rng=jax.random.key(0), progress=False,
               workdir=tmp_path, config=RUN)
    other = RUN.replace(optimizer=RUN.optimizer.replace(learning_rate=0.5))
    with pytest.raises(ValueError, match=r"another config \(optimizer.learning_rate: 0.01 -> 0.5\)"):
        jaxzoo.fit(plan().state, step, make_batch, num_steps=4, rng=jax.random.key(0), progress=False,
                   workdir=tmp_path, config=other)
    with pytest.raises(ValueError, match="allow_config_change"):
        plan(workdir=tmp_path, config=other)
    state, _ = jaxzoo.fit(plan().state, step, make_batch, num_steps=4, rng=jax.random.key(0), progress=False,
                          workdir=tmp_path, config=other, allow_config_change=True)
    assert int(state.step) == 4


def test_rebuild_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        jaxzoo.rebuild(tmp_path)
    RUN.model.save(tmp_path)
    with pytest.raises(ValueError, match="has no recipe"):
        jaxzoo.rebuild(tmp_path)
    RUN.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        jaxzoo.rebuild(tmp_path)
    with pytest.raises(ValueError, match="init function"):
        jaxzoo.plan_state({"w": 1}, optax.sgd(0.1), jax.random.key(0))


def test_fit_fetches_metrics_only_every_log_every_steps(monkeypatch):
    calls = []
    real = zt._fetch
    monkeypatch.setattr(zt, "_fetch", lambda m: calls.append(1) or real(m))
    tx = RUN.recipe().tx
    step = jaxzoo.make_train_step(loss_fn, tx)
    _, every = jaxzoo.fit(plan().state, step, make_batch, num_steps=40, rng=jax.random.key(0),
                          progress=False, log_every=1)
    n_every = len(calls)
    calls.clear()
    _, tenth = jaxzoo.fit(plan().state, step, make_batch, num_steps=40, rng=jax.random.key(0),
                          progress=False, log_every=10)
    assert n_every == 40 and len(calls) == 4
    assert tenth == [r for r in every if r["step"] % 10 == 0]
    with pytest.raises(ValueError, match="log_every"):
        jaxzoo.fit(plan().state, step, make_batch, num_steps=4, rng=jax.random.key(0), log_every=0)


def test_reusing_a_donated_state_says_why():
    tx = RUN.recipe().tx
    step = jaxzoo.make_train_step(loss_fn, tx)
    state = plan().state
    step(state, make_batch(0), jax.random.key(0))
    with pytest.raises(ValueError, match="donates its input state"):
        step(state, make_batch(1), jax.random.key(0))


def test_masked_and_multi_transform_states_follow_their_parameters():
    """Optimizer leaves are matched to parameters by key path and shape, so optax.masked and
    optax.multi_transform states (MaskedNode where a parameter is left out) are planned too."""
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    recipe = RUN.recipe()
    labels = lambda p: {"fc1": jax.tree.map(lambda _: "train", p["fc1"]), "fc2": jax.tree.map(lambda _: "off", p["fc2"])}
    tx = optax.multi_transform({"train": optax.adam(1e-2), "off": optax.set_to_zero()}, labels)
    p = jaxzoo.plan_state(recipe.init_fn, tx, jax.random.key(0), mesh=mesh)
    mu = adam(p.state.opt_state).mu
    assert mu["fc1"]["kernel"].sharding.spec == P(None, "model") and mu["fc1"]["bias"].sharding.spec == P("model")
    assert isinstance(mu["fc2"]["kernel"], optax.MaskedNode)
    assert p.memory()["opt_state"] == 2 * 4 * (8 * 8 + 8) + 4  # moments of fc1 only (hidden split in 2)
    masked = optax.masked(optax.adam(1e-2), lambda q: jax.tree.map(lambda x: x.ndim == 2, q))
    p = jaxzoo.plan_state(recipe.init_fn, masked, jax.random.key(0), mesh=mesh)
    assert adam(p.state.opt_state).nu["fc2"]["kernel"].sharding.spec == P("model", None)


def test_fit_reports_throughput_and_mfu():
    tx = RUN.recipe().tx
    step = jaxzoo.make_train_step(loss_fn, tx)
    _, hist = jaxzoo.fit(plan().state, step, make_batch, num_steps=4, rng=jax.random.key(0), progress=False,
                         log_every=2, examples_per_step=8, flops_per_step=1e6, peak_flops=1e9)
    r = hist[-1]
    assert r["examples_per_s"] > 0 and r["flops_per_s"] == pytest.approx(r["examples_per_s"] / 8 * 1e6)
    assert r["mfu"] == pytest.approx(r["flops_per_s"] / 1e9)
    assert jaxzoo.flops.peak_flops() is None  # a CPU has no listed peak


def test_xla_flops_of_a_matmul():
    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    assert jaxzoo.flops.xla_flops(jnp.matmul, a, b) == pytest.approx(2 * 8 * 16 * 4, rel=0.2)
