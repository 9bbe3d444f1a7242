"""Config round trips and their errors; the optimizer config's schedules and chain; the precision policy."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxzoo
from jaxzoo.config import Config


@dataclasses.dataclass(frozen=True)
class Inner(Config):
    """A nested config."""

    sizes: tuple[int, int, int] = (1, 2, 2)  # a fixed-length tuple
    names: tuple[str, ...] = ("a", "b")  # a variadic tuple
    maybe: int | None = None  # optional


@dataclasses.dataclass(frozen=True)
class Outer(Config):
    """A config with a nested config,
    tuples and floats."""

    inner: Inner = Inner()  # nested
    rate: float = 0.5  # a float
    # --- a section line that belongs to no field
    flag: bool = True  # a flag; its comment
    # goes on here
    label: str | None = "x"  # text or None


def test_round_trip_equal_and_hashable(tmp_path):
    cfg = Outer(inner=Inner(sizes=(3, 4, 5), names=("q",), maybe=7), rate=2, flag=False, label=None)
    back = Outer.from_json(cfg.to_json())
    assert back == cfg and hash(back) == hash(cfg)
    assert isinstance(back.inner.sizes, tuple) and back.rate == 2.0
    cfg.save(tmp_path)
    loaded = jaxzoo.load_config(tmp_path)
    assert loaded == cfg and type(loaded) is Outer
    assert Outer.load(tmp_path) == cfg
    jax.jit(lambda x, c: x * c.rate, static_argnums=1)(1.0, loaded)  # usable as a static argument


def test_field_comments_are_in_help():
    doc = Outer.__doc__
    assert "tuples and floats." in doc
    assert "rate   a float" in doc and "flag   a flag; its comment goes on here" in doc
    assert "section line" not in doc


def test_unknown_missing_wrong_type_and_version():
    data = Outer().to_dict()
    with pytest.raises(ValueError, match=r"Outer has no field\(s\) \['extra'\]"):
        Outer.from_dict({**data, "extra": 1})
    with pytest.raises(ValueError, match=r"Outer data lacks field\(s\) \['rate'\]"):
        Outer.from_dict({k: v for k, v in data.items() if k != "rate"})
    with pytest.raises(ValueError, match=r"Inner.sizes: expected 3 entries, got 2"):
        Outer.from_dict({**data, "inner": {**data["inner"], "sizes": [1, 2]}})
    with pytest.raises(ValueError, match=r"Outer.rate: expected float, got str"):
        Outer.from_dict({**data, "rate": "fast"})
    with pytest.raises(ValueError, match=r"Inner.maybe: 1.5 fits none of"):
        Outer.from_dict({**data, "inner": {**data["inner"], "maybe": 1.5}})
    with pytest.raises(ValueError, match="version 2; this code reads versions <= 1"):
        Outer.from_dict({**data, "__version__": 2})
    with pytest.raises(ValueError, match="not a .*Inner"):
        Inner.from_dict(data)
    with pytest.raises(ValueError, match="unknown config class 'nowhere.Cfg'"):
        Config.from_dict({"__class__": "nowhere.Cfg"})
    with pytest.raises(ValueError, match="not valid JSON"):
        Outer.from_json('{"rate": ')


def test_truncated_config_file(tmp_path):
    (tmp_path / "config.json").write_text('{"__class__": "x", ')
    with pytest.raises(ValueError, match="truncated or corrupt"):
        jaxzoo.load_config(tmp_path)


def test_plain_dict_configs_still_load(tmp_path):
    jaxzoo.save_config(tmp_path, {"a": 1, "b": [1, 2]})
    assert jaxzoo.load_config(tmp_path) == {"a": 1, "b": [1, 2]}


# ------------------------------------------------------------------------------------------ optimizer
def test_warmup_is_derived_from_the_run_length():
    cfg = jaxzoo.OptimizerConfig(schedule="cosine", warmup_fraction=0.05)
    assert cfg.warmup(400) == 20 and cfg.replace(warmup_steps=7).warmup(400) == 7
    lr = jaxzoo.lr_schedule(cfg, 400)
    assert float(lr(0)) == 0.0 and float(lr(20)) == pytest.approx(1e-3)
    assert float(lr(10)) == pytest.approx(0.5e-3)
    assert float(lr(400)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    "schedule, expect",  # learning rate at steps 0, 10, 50, 90, 100 of a 100-step run, warm-up 10, end 0.1
    [
        ("constant", [0.0, 1.0, 1.0, 1.0, 1.0]),
        ("cosine", [0.0, 1.0, 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 40 / 90)), None, 0.1]),
        ("linear", [0.0, 1.0, 1.0 - 0.9 * 40 / 90, None, 0.1]),
        ("wsd", [0.0, 1.0, 1.0, 1.0 - 0.9 * 10 / 20, 0.1]),
    ],
)
def test_schedules_against_formulas(schedule, expect):
    cfg = jaxzoo.OptimizerConfig(learning_rate=1.0, schedule=schedule, warmup_steps=10, end_lr_ratio=0.1,
                                 decay_fraction=0.2)
    lr = jaxzoo.lr_schedule(cfg, 100)
    for step, want in zip([0, 10, 50, 90, 100], expect):
        if want is not None:
            assert float(lr(step)) == pytest.approx(want, abs=1e-6), (schedule, step)


def test_adamw_chain_matches_optax_by_hand():
    cfg = jaxzoo.OptimizerConfig(learning_rate=0.1, weight_decay=0.1, grad_clip=0.5, warmup_steps=0,
                                 b2=0.95)
    tx = jaxzoo.make_optimizer(cfg, 10)
    ref = optax.chain(optax.clip_by_global_norm(0.5),
                      optax.adamw(0.1, b1=0.9, b2=0.95, weight_decay=0.1, mask=lambda p: jax.tree.map(
                          lambda x: x.ndim >= 2, p)))
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    grads = {"w": jnp.full((2, 3), 2.0), "b": jnp.full(3, -1.0)}
    u1, _ = tx.update(grads, tx.init(params), params)
    u2, _ = ref.update(grads, ref.init(params), params)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_ema_and_skip_nonfinite():
    cfg = jaxzoo.OptimizerConfig(algorithm="sgd", b1=0.0, learning_rate=1.0, ema_decay=0.5,
                                 skip_nonfinite=True)
    tx = jaxzoo.make_optimizer(cfg, 10)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.ones(2)}, state, params)
    np.testing.assert_allclose(updates["w"], -1.0)
    np.testing.assert_allclose(jaxzoo.ema_params(state)["w"], -0.5)  # 0.5 * 0 + 0.5 * (0 - 1)
    updates, state = tx.update({"w": jnp.array([np.nan, 1.0])}, state, params)
    np.testing.assert_allclose(updates["w"], 0.0)  # skipped
    with pytest.raises(ValueError, match="no EMA"):
        jaxzoo.ema_params(jaxzoo.make_optimizer(jaxzoo.OptimizerConfig(), 10).init(params))


def test_optimizer_config_errors():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        jaxzoo.OptimizerConfig(algorithm="adagrad")
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        jaxzoo.OptimizerConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match=r"b2 must lie in \[0, 1\]"):
        jaxzoo.OptimizerConfig(b2=1.5)
    with pytest.raises(ValueError, match="total_steps must be a positive int"):
        jaxzoo.lr_schedule(jaxzoo.OptimizerConfig(), 0)
    with pytest.raises(ValueError, match="longer than the run"):
        jaxzoo.lr_schedule(jaxzoo.OptimizerConfig(warmup_steps=20), 10)
    with pytest.raises(ValueError, match="expects an OptimizerConfig"):
        jaxzoo.make_optimizer({"learning_rate": 1.0}, 10)


# ------------------------------------------------------------------------------------------ precision
def test_precision_policy_and_dtype_names():
    p = jaxzoo.Precision.bf16()
    assert p.compute == jnp.bfloat16 and p.param == jnp.float32
    assert p.dtype_for("softmax") == jnp.float32 and p.dtype_for("logits") == jnp.float32
    assert jaxzoo.Precision(compute_dtype="bf16", float32=("norm",)).dtype_for("logits") == jnp.bfloat16
    assert jaxzoo.Precision(compute_dtype="bf16").compute_dtype == "bfloat16"  # canonical names
    assert jaxzoo.Precision.of("bfloat16") == p and jaxzoo.Precision.of(None) == jaxzoo.Precision()
    assert p.cast(jnp.ones(2)).dtype == jnp.bfloat16 and p.cast(jnp.ones(2, jnp.int32)).dtype == jnp.int32
    assert jaxzoo.Config.from_json(p.to_json()) == p
    assert jaxzoo.parse_dtype("f64") == jnp.float64 and jaxzoo.parse_dtype(np.float16) == jnp.float16
    with pytest.raises(ValueError, match="expected a float dtype"):
        jaxzoo.parse_dtype("int8")
    with pytest.raises(ValueError, match="unknown parts"):
        jaxzoo.Precision(float32=("attention",))
    with pytest.raises(ValueError, match="unknown precision part"):
        p.dtype_for("everything")


# ------------------------------------------------------------------------------------------ master weights
def test_master_weights_is_the_inner_optimizer_for_float32_params():
    cfg = jaxzoo.OptimizerConfig(learning_rate=0.1, weight_decay=0.01, ema_decay=0.9)
    plain = jaxzoo.make_optimizer(cfg, 10)
    mixed = jaxzoo.make_optimizer(cfg.replace(master_dtype="f32"), 10)
    assert jaxzoo.OptimizerConfig.from_json(cfg.replace(master_dtype="f32").to_json()).master_dtype == "float32"
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros(3)}
    p1 = p2 = params
    s1, s2 = plain.init(params), mixed.init(params)
    for i in range(4):
        grads = jax.tree.map(lambda x, i=i: jnp.sin(x + i) + 0.5, p1)
        u1, s1 = plain.update(grads, s1, p1)
        u2, s2 = mixed.update(grads, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jaxzoo.ema_params(s1)["w"], jaxzoo.ema_params(s2)["w"], rtol=1e-6)


def test_master_weights_keep_small_updates_that_bf16_rounds_away():
    """bf16 parameters near 1 have spacing 2^-7; 100 updates of 1e-4 vanish in plain bf16 SGD but
    accumulate in the float32 master copy (and so reach the bf16 parameters), as in float32 training."""
    cfg = jaxzoo.OptimizerConfig(algorithm="sgd", b1=0.0, learning_rate=1e-4, warmup_steps=0)
    params = {"w": jnp.ones(4, jnp.bfloat16), "n": jnp.arange(4)}
    grads = {"w": jnp.ones(4, jnp.bfloat16), "n": jnp.zeros(4, jnp.int32)}
    for master, want in ((None, 1.0), ("float32", 1.0 - 100 * 1e-4)):
        tx = jaxzoo.make_optimizer(cfg.replace(master_dtype=master), 100)
        p, state = params, tx.init(params)
        for _ in range(100):
            u, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, u)
        assert p["w"].dtype == jnp.bfloat16 and np.array_equal(p["n"], params["n"])
        np.testing.assert_allclose(np.asarray(p["w"], np.float32), want, atol=2**-8)
        if master:
            assert state.master["w"].dtype == jnp.float32
            np.testing.assert_allclose(state.master["w"], want, atol=1e-5)
            assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(state))


def test_master_weights_are_planned_like_their_parameters():
    """The planner gives the float32 master copy and the float32 moments of bf16 parameters the
    parameters' shardings."""
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    model = jaxzoo.DenseGeneral((8,), axes=("embed", "mlp"), param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    tx = jaxzoo.make_optimizer(jaxzoo.OptimizerConfig(master_dtype="float32"), 10)
    plan = jaxzoo.plan_state(jaxzoo.module_init(model, jnp.ones((4, 6), jnp.bfloat16)), tx, jax.random.key(0),
                             mesh=mesh)
    kernel = plan.state.params["kernel"]
    assert kernel.dtype == jnp.bfloat16
    masters = [x for x in jax.tree.leaves(plan.state.opt_state) if x.shape == kernel.shape]
    assert len(masters) == 3  # master copy, mu, nu
    for x in masters:
        assert x.dtype == jnp.float32 and x.sharding.spec == kernel.sharding.spec


def test_post_update_constrains_the_master_weights_too():
    """make_train_step applies post_update to the float32 master copy as well as to the bf16 parameters,
    so a unit-norm constraint holds on the weights the optimizer actually steps."""
    cfg = jaxzoo.OptimizerConfig(algorithm="adam", learning_rate=0.1, warmup_steps=0, master_dtype="float32")
    tx = jaxzoo.make_optimizer(cfg, 10)
    params = {"w": jnp.ones((3, 4), jnp.bfloat16) * 0.5}
    state = jaxzoo.TrainState.create(params, tx)

    def loss_fn(p, batch, rng):
        return -jnp.sum(p["w"].astype(jnp.float32) * batch), {}

    def unit_rows(p):
        w = p["w"]
        return {"w": w / jnp.linalg.norm(w.astype(jnp.float32), axis=-1, keepdims=True).astype(w.dtype)}

    step = jaxzoo.make_train_step(loss_fn, tx, post_update=unit_rows, donate=False)
    batch = jnp.arange(12.0).reshape(3, 4)
    for _ in range(3):
        state, _ = step(state, batch, jax.random.key(0))
    (master_state,) = [s for s in jax.tree.leaves(
        state.opt_state, is_leaf=lambda s: isinstance(s, jaxzoo.optim.MasterState))
        if isinstance(s, jaxzoo.optim.MasterState)]
    master = master_state.master["w"]
    assert master.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(np.asarray(master), axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.params["w"], np.float32), master, atol=2**-7)
    # without master weights map_master is the identity
    plain = optax.adam(0.1).init(params)
    assert jaxzoo.optim.map_master(plain, unit_rows) is not None
    jax.tree.map(np.testing.assert_array_equal, jaxzoo.optim.map_master(plain, unit_rows), plain)


def test_lr_multipliers_scale_one_parameters_step():
    """lr_multipliers={"b": 3}: b's Adam step is 3x the plain one, every other parameter's is unchanged,
    nested names match on the last key."""
    cfg = jaxzoo.OptimizerConfig(algorithm="adam", learning_rate=0.01, warmup_steps=0, grad_clip=0.0)
    params = {"a": jnp.ones(3), "inner": {"b": jnp.ones(2)}, "b": jnp.ones(4)}
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    plain = jaxzoo.make_optimizer(cfg, 10)
    scaled = jaxzoo.make_optimizer(cfg, 10, lr_multipliers={"b": 3.0})
    u_plain, _ = plain.update(grads, plain.init(params), params)
    u_scaled, _ = scaled.update(grads, scaled.init(params), params)
    np.testing.assert_allclose(u_scaled["a"], u_plain["a"])
    np.testing.assert_allclose(u_scaled["b"], 3 * u_plain["b"], rtol=1e-6)
    np.testing.assert_allclose(u_scaled["inner"]["b"], 3 * u_plain["inner"]["b"], rtol=1e-6)
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="must be a positive number"):
            jaxzoo.make_optimizer(cfg, 10, lr_multipliers={"b": bad})
