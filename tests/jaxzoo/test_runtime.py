"""The shared runtime: sharded step == unsharded step, checkpoints, resume, and its errors."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxzoo
from jaxzoo import sharding as zs


@dataclasses.dataclass(frozen=True)
class MLPConfig(jaxzoo.Config):
    """The test MLP."""

    d_in: int = 8  # input features
    d_hidden: int = 16  # hidden width, sharded over "model"
    d_out: int = 4  # outputs


class MLP(nn.Module):
    cfg: MLPConfig

    @nn.compact
    def __call__(self, x):  # [B, d_in] -> [B, d_out]
        init = nn.initializers.lecun_normal()
        w1 = self.param(
            "w1", nn.with_logical_partitioning(init, ("embed", "mlp")), (self.cfg.d_in, self.cfg.d_hidden)
        )
        b1 = self.param(
            "b1", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)), (self.cfg.d_hidden,)
        )
        w2 = self.param(
            "w2", nn.with_logical_partitioning(init, ("mlp", "embed")), (self.cfg.d_hidden, self.cfg.d_out)
        )
        h = jnp.tanh(jnp.einsum("bi,ih->bh", x, w1) + b1)
        return jnp.einsum("bh,ho->bo", h, w2)


CFG = MLPConfig()
MODEL = MLP(CFG)
TX = optax.adam(1e-2)


def loss_fn(params, batch, rng):
    pred = MODEL.apply({"params": params}, batch["x"])
    noise = 1e-3 * jax.random.normal(rng, pred.shape)  # uses the per-step rng, so folding matters
    loss = jnp.mean((pred + noise - batch["y"]) ** 2)
    return loss, {"mae": jnp.mean(jnp.abs(pred - batch["y"]))}


def make_batch(step, size=16):
    rng = np.random.default_rng(step)
    x = rng.normal(size=(size, CFG.d_in)).astype(np.float32)
    return {"x": x, "y": np.sin(x[:, : CFG.d_out]).astype(np.float32)}


def unsharded_state():
    params = MODEL.init(jax.random.key(0), jnp.zeros((1, CFG.d_in)))["params"]
    return jaxzoo.TrainState.create(nn.meta.unbox(params), TX)


def sharded_state(mesh):
    init = jaxzoo.module_init(MODEL, jnp.zeros((1, CFG.d_in)))
    return jaxzoo.plan_state(init, TX, jax.random.key(0), mesh=mesh).state


def test_sharded_step_equals_single_device():
    assert jax.device_count() == 8
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    state_s = sharded_state(mesh)
    assert state_s.params["w1"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert len(state_s.params["w1"].addressable_shards) == 8
    mu = state_s.opt_state[0].mu  # Adam's first moment follows its parameter's sharding
    assert mu["w1"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert mu["w2"].sharding.spec == jax.sharding.PartitionSpec("model", None)
    state_u = unsharded_state()
    step_s = jaxzoo.make_train_step(loss_fn, TX, mesh=mesh)
    step_u = jaxzoo.make_train_step(loss_fn, TX)
    rng = jax.random.key(1)
    for i in range(5):
        batch = make_batch(i)
        state_s, m_s = step_s(state_s, jaxzoo.shard_batch(batch, mesh), rng)
        state_u, m_u = step_u(state_u, batch, rng)
        np.testing.assert_allclose(m_s["loss"], m_u["loss"], rtol=1e-6, atol=1e-6)
    assert state_s.params["w1"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert state_s.opt_state[0].nu["w1"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    for a, b in zip(jax.tree.leaves(state_s.params), jax.tree.leaves(state_u.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    assert int(state_s.step) == 5


def test_make_mesh_fills_remaining_devices_with_auto_axes():
    mesh = jaxzoo.make_mesh({"data": -1, "model": 2})
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_extend_rules_overrides_and_adds():
    rules = jaxzoo.extend_rules(("mlp", None), ("length", "model"))
    assert dict(rules)["mlp"] is None and dict(rules)["length"] == "model" and dict(rules)["batch"] == "data"
    with pytest.raises(ValueError, match="not a logical axis name of jaxzoo.AXES"):
        jaxzoo.extend_rules(("d_sae", "model"))


def test_checkpoint_round_trip_keeps_values_and_sharding(tmp_path):
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    state = sharded_state(mesh)
    with jaxzoo.Checkpointer(tmp_path / "ckpt", keep=2) as ckpt:
        for s in (1, 2, 3):
            ckpt.save(s, state.replace(step=jnp.asarray(s, jnp.int32)), config=CFG)
        ckpt.wait()
        assert ckpt.all_steps() == [2, 3]  # keep=2
        target = jax.tree.map(jnp.zeros_like, state)
        restored = ckpt.restore(target)
    assert int(restored.step) == 3
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state.replace(step=jnp.asarray(3)))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert restored.params["w1"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert jaxzoo.load_config(tmp_path / "ckpt") == CFG


def test_fit_resume_continues_where_it_stopped(tmp_path):
    rng = jax.random.key(3)
    step = jaxzoo.make_train_step(loss_fn, TX)

    def evaluate(state):
        return {"loss": loss_fn(state.params, make_batch(999), jax.random.key(0))[0]}

    common = dict(rng=rng, eval_fn=evaluate, eval_every=4, checkpoint_every=3, config=CFG, progress=False,
                  log_every=1)
    full, hist_full = jaxzoo.fit(
        unsharded_state(), step, make_batch, num_steps=10, workdir=tmp_path / "a", **common
    )
    part, hist_part = jaxzoo.fit(
        unsharded_state(), step, make_batch, num_steps=7, workdir=tmp_path / "b", **common
    )
    assert int(part.step) == 7 and len(hist_part) == 7
    resumed, hist_resumed = jaxzoo.fit(
        unsharded_state(), step, make_batch, num_steps=10, workdir=tmp_path / "b", **common
    )
    assert int(resumed.step) == 10
    assert hist_resumed == hist_full
    assert jaxzoo.read_metrics(tmp_path / "b" / "metrics.jsonl") == hist_full
    assert [r["step"] for r in hist_full] == list(range(1, 11))
    assert "eval_loss" in hist_full[3] and "eval_loss" not in hist_full[2]
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert json.loads((tmp_path / "b" / "config.json").read_text())["d_hidden"] == CFG.d_hidden


def test_fit_resumes_from_a_mid_run_checkpoint_with_an_iterable(tmp_path):
    """Interrupted after step 6's checkpoint (steps 7.. lost): the rerun replays from step 6."""
    rng = jax.random.key(4)
    step = jaxzoo.make_train_step(loss_fn, TX)
    full, hist_full = jaxzoo.fit(
        unsharded_state(), step, (make_batch(i) for i in range(8)), num_steps=8, rng=rng, progress=False,
        log_every=1,
    )
    part, _ = jaxzoo.fit(
        unsharded_state(),
        step,
        make_batch,
        num_steps=6,
        rng=rng,
        workdir=tmp_path,
        checkpoint_every=3,
        progress=False,
        log_every=1,
    )
    with (tmp_path / "metrics.jsonl").open("a") as f:  # a step logged after the last checkpoint
        f.write(json.dumps({"step": 7, "loss": -1.0}) + "\n")
    resumed, hist = jaxzoo.fit(
        unsharded_state(),
        step,
        (make_batch(i) for i in range(8)),
        num_steps=8,
        rng=rng,
        workdir=tmp_path,
        checkpoint_every=3,
        progress=False,
        log_every=1,
    )
    assert hist == hist_full
    np.testing.assert_array_equal(np.asarray(resumed.params["w2"]), np.asarray(full.params["w2"]))


# ----------------------------------------------------------------------------- errors


def test_mesh_larger_than_device_count():
    with pytest.raises(ValueError, match="needs 16 devices; only 8 are available"):
        jaxzoo.make_mesh({"data": 8, "model": 2})


def test_mesh_remaining_not_divisible():
    with pytest.raises(ValueError, match="divisible by 3"):
        jaxzoo.make_mesh({"data": -1, "model": 3})


def test_mesh_two_wildcards_and_bad_sizes():
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        jaxzoo.make_mesh({"data": -1, "model": -1})
    with pytest.raises(ValueError, match="positive or -1"):
        jaxzoo.make_mesh({"data": 0})
    with pytest.raises(ValueError, match="at least one axis"):
        jaxzoo.make_mesh({})


def test_parameter_not_divisible_by_mesh_axis():
    mesh = jaxzoo.make_mesh({"data": 1, "model": 8})
    odd = MLP(MLPConfig(d_hidden=12))
    with pytest.raises(
        ValueError,
        match=r"\['b1'\]: dimension 0 of shape \(12,\) is not divisible by mesh axes \('model',\) of total size 8",
    ):
        jaxzoo.init_sharded(odd, jax.random.key(0), jnp.zeros((1, 8)), mesh=mesh)


def test_batch_not_divisible_by_data_axis():
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    with pytest.raises(ValueError, match=r"\['x'\] has leading dimension 6, which is not divisible by the 4"):
        jaxzoo.shard_batch({"x": np.zeros((6, 8))}, mesh)
    with pytest.raises(ValueError, match="no axis 'batch'"):
        jaxzoo.shard_batch({"x": np.zeros((8, 8))}, mesh, axis="batch")


def test_bad_rule():
    with pytest.raises(ValueError, match="pair"):
        jaxzoo.extend_rules(("mlp",))


def test_restore_missing_checkpoint(tmp_path):
    ckpt = jaxzoo.Checkpointer(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        ckpt.restore(unsharded_state())
    ckpt.save(1, unsharded_state())
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 5"):
        ckpt.restore(unsharded_state(), step=5)
    ckpt.close()
    with pytest.raises(FileNotFoundError, match="config.json"):
        jaxzoo.load_config(tmp_path / "none")


def test_restore_into_mismatched_tree_names_the_key(tmp_path):
    with jaxzoo.Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, {"params": {"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float32)}})
        with pytest.raises(
            ValueError, match=r"key 'params/w' has shape \(3, 4\), the target expects \(3, 5\)"
        ):
            ckpt.restore({"params": {"w": np.zeros((3, 5), np.float32), "b": np.zeros(4, np.float32)}})
        with pytest.raises(ValueError, match="has no key 'params/c'"):
            ckpt.restore(
                {
                    "params": {
                        "w": np.zeros((3, 4), np.float32),
                        "b": np.zeros(4, np.float32),
                        "c": np.zeros(1, np.float32),
                    }
                }
            )
        with pytest.raises(ValueError, match="has key 'params/b' that the target does not have"):
            ckpt.restore({"params": {"w": np.zeros((3, 4), np.float32)}})


def test_fit_argument_errors():
    step = jaxzoo.make_train_step(loss_fn, TX)
    with pytest.raises(ValueError, match="num_steps"):
        jaxzoo.fit(unsharded_state(), step, make_batch, num_steps=-1, rng=jax.random.key(0))
    with pytest.raises(ValueError, match="ran out at step 2"):
        jaxzoo.fit(
            unsharded_state(),
            step,
            [make_batch(0), make_batch(1)],
            num_steps=4,
            rng=jax.random.key(0),
            progress=False,
        )


def test_logical_shardings_replicate_unnamed_leaves():
    mesh = jaxzoo.make_mesh({"data": 8})
    abstract = jax.eval_shape(MODEL.init, jax.random.key(0), jnp.zeros((1, CFG.d_in)))
    shardings = zs.logical_shardings(abstract, mesh)
    assert shardings["params"]["w1"].spec == jax.sharding.PartitionSpec(None, None)


# ----------------------------------------------------------------------------- jaxzoo.nn.DenseGeneral


def test_dense_general_matches_numpy_loops_and_shards_multi_axis_kernels():
    from jaxzoo.nn import DenseGeneral, flat_init

    layer = DenseGeneral((2, 4), ("embed", "heads", "head_dim"), n_in=1)  # [B, 3] -> [B, 2, 4]
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    params = nn.meta.unbox(layer.init(jax.random.key(0), x))["params"]
    kernel = np.asarray(params["kernel"]) + 0.5
    bias = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    y = np.asarray(layer.apply({"params": {"kernel": kernel, "bias": bias}}, x))
    expect = np.zeros((5, 2, 4))
    for b in range(5):
        for h in range(2):
            for d in range(4):
                expect[b, h, d] = sum(x[b, i] * kernel[i, h, d] for i in range(3)) + bias[h, d]
    np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-5)

    two_in = DenseGeneral(
        (3,), ("heads", "head_dim", "embed"), n_in=2, kernel_init=flat_init(nn.initializers.ones, 2)
    )
    z = np.ones((1, 2, 4), np.float32)
    out = two_in.apply(nn.meta.unbox(two_in.init(jax.random.key(0), z)), z)
    np.testing.assert_allclose(np.asarray(out), np.full((1, 3), 8.0))  # sum over 2 x 4 inputs of 1 * 1

    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    variables, _ = jaxzoo.init_sharded(layer, jax.random.key(0), x[:4], mesh=mesh)
    assert variables["params"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(None, "model", None)
    assert variables["params"]["kernel"].shape == (3, 2, 4)


def test_dense_general_errors():
    from jaxzoo.nn import DenseGeneral

    with pytest.raises(ValueError, match=r"kernel has shape \(3, 4\) but 3 logical axis names"):
        DenseGeneral((4,), ("embed", "mlp", "x")).init(jax.random.key(0), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="contracts the last 2 axes"):
        DenseGeneral((4,), ("a", "b", "c"), n_in=2).init(jax.random.key(0), np.zeros((3,)))


def test_evaluate_weights_batches_by_rows_and_shards():
    """jaxzoo.evaluate: the row-weighted mean of per-batch means (a smaller last batch counts for its
    rows), the same on a (data=4, model=2) mesh as unsharded, and an error for no batches."""
    x = np.arange(20, dtype=np.float32).reshape(10, 2)

    def metric(params, batch):
        err = batch["x"] * params["w"]
        return {"mean": err.mean(), "sq": (err**2).mean(), "vector": err.mean(0)}

    params = {"w": jnp.float32(0.5)}
    batches = [{"x": x[:4]}, {"x": x[4:8]}, {"x": x[8:]}]
    got = jaxzoo.evaluate(metric, params, batches)
    want = x * 0.5
    assert set(got) == {"mean", "sq"}  # only scalars are reported
    np.testing.assert_allclose(got["mean"], want.mean(), rtol=1e-6)
    np.testing.assert_allclose(got["sq"], (want**2).mean(), rtol=1e-6)
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    sharded = jaxzoo.evaluate(jax.jit(metric), params, [{"x": x[:8]}, {"x": x[:4]}], mesh=mesh)
    np.testing.assert_allclose(sharded["mean"], np.concatenate([want[:8], want[:4]]).mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="no batches"):
        jaxzoo.evaluate(metric, params, [])


def test_sharded_step_is_traced_with_the_mesh_and_rules_in_force():
    """Activation constraints inside a model (nn.with_logical_constraint) need the mesh and the logical
    rules while the step is traced; make_train_step(mesh=, rules=) provides both (rules default to jaxzoo's)."""
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    seen = {}
    rules = jaxzoo.extend_rules(("length", "model"))

    def constrained_loss(params, batch, rng):
        seen["rules"] = dict(nn.get_logical_axis_rules())
        seen["mesh"] = dict(jax.sharding.get_abstract_mesh().shape)
        h = nn.with_logical_constraint(batch["x"] @ params["w1"], ("batch", "length"))
        return jnp.mean((h @ params["w2"] - batch["y"]) ** 2), {}

    state_s = sharded_state(mesh)
    step = jaxzoo.make_train_step(constrained_loss, TX, mesh=mesh, rules=rules)
    batch = make_batch(0)
    state_s, m = step(state_s, jaxzoo.shard_batch(batch, mesh), jax.random.key(1))
    assert seen["rules"]["length"] == "model" and seen["rules"]["batch"] == "data"
    assert seen["mesh"] == {"data": 4, "model": 2}
    _, m_u = jaxzoo.make_train_step(constrained_loss, TX)(unsharded_state(), batch, jax.random.key(1))
    np.testing.assert_allclose(m["loss"], m_u["loss"], rtol=1e-6)
