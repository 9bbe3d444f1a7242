"""jrt on the jaxzoo runtime: sharded state and step, configs that round-trip, rebuild-and-continue, resume checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxzoo
import jrt

TINY = jrt.JRTConfig.tiny(init_std=0.3)
RUN = jrt.RunConfig(model=TINY, steps=10, batch_size=8)


def make_batch(seed, b=8, n=16):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, TINY.vocab_size - 1, (b, n)).astype(np.int32)
    labels = np.roll(x, -1, axis=1)
    labels[:, -1] = jrt.IGNORE
    return {"input_ids": x, "labels": labels}


def mirrored(tx, opt_state, params):
    """[(optimizer leaf, its parameter)] for every optimizer leaf shaped like a parameter (Adam's mu, nu)."""
    pairs = []

    def visit(o, p):
        if hasattr(o, "shape"):
            pairs.append((o, p))
        return o

    optax.tree_map_params(
        tx, visit, opt_state, params, transform_non_params=lambda x: x, is_leaf=lambda x: x is None
    )
    return pairs


def spec_axes(x):
    return {a for e in x.sharding.spec if e is not None for a in ((e,) if isinstance(e, str) else e)}


def check_mirrors(state, *, zero1):
    pairs = mirrored(jrt.make_optimizer(RUN), state.opt_state, state.params)
    assert len(pairs) == 2 * len(jax.tree.leaves(state.params))  # mu and nu of every parameter
    model_sharded = 0
    for o, p in pairs:
        assert o.shape == p.shape
        if not zero1:
            assert o.sharding.is_equivalent_to(p.sharding, o.ndim), (o.sharding, p.sharding)
        else:
            assert spec_axes(p) <= spec_axes(o)  # the parameter's axes, plus "data" where a dim divides
            free = [
                d for d, e in enumerate(list(p.sharding.spec) + [None] * o.ndim) if d < o.ndim and e is None
            ]
            if any(o.shape[d] % 4 == 0 for d in free):
                assert "data" in spec_axes(o), (o.shape, o.sharding.spec)
        model_sharded += "model" in spec_axes(p)
    assert model_sharded > 0  # heads / mlp / vocab are split over "model"


@pytest.mark.parametrize("zero1", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_sharded_state_and_steps_equal_single_device(zero1):
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    plan = jrt.init_state(RUN, jax.random.key(0), mesh=mesh, zero1=zero1)
    check_mirrors(plan.state, zero1=zero1)
    single = jax.device_put(jax.device_get(plan.state), jax.devices()[0])

    sharded_step = jrt.make_train_step(RUN, mesh=mesh, state_sharding=plan.shardings, donate=False)
    single_step = jrt.make_train_step(RUN, donate=False)
    state, rng = plan.state, jax.random.key(3)
    for i in range(3):
        batch = make_batch(i)
        state, m = sharded_step(state, jaxzoo.shard_batch(batch, mesh), rng)
        single, m1 = single_step(single, batch, rng)
        assert float(m["mlm_tokens"]) > 0  # the JRT objective (NTP + MLM) is what runs
        np.testing.assert_allclose(float(m["loss"]), float(m1["loss"]), rtol=1e-6)
        if i == 0:
            check_mirrors(state, zero1=zero1)
    assert int(state.step) == 3
    for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


CONFIGS = {
    "default": jrt.JRTConfig(),
    "jrt_360m": jrt.JRTConfig.jrt_360m(),
    "based_360m": jrt.JRTConfig.based_360m(),
    "jrt_1b3": jrt.JRTConfig.jrt_1b3(),
    "based_1b3": jrt.JRTConfig.based_1b3(),
    "tiny": jrt.JRTConfig.tiny(),
    "tiny_based": jrt.JRTConfig.tiny_based(),
    "tiny_bf16": jrt.JRTConfig.tiny(precision=jaxzoo.Precision.bf16(), chunk_size=None),
    "run_default": jrt.RunConfig(),
    "run_tiny": RUN,
    "run_custom": jrt.RunConfig(
        model=jrt.JRTConfig.tiny_based(), optimizer=jrt.REFERENCE_OPTIMIZER.replace(warmup_steps=3), steps=7
    ),
    "reference_optimizer": jrt.REFERENCE_OPTIMIZER,
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_round_trip(name, tmp_path):
    cfg = CONFIGS[name]
    back = type(cfg).from_json(cfg.to_json())
    assert back == cfg and type(back) is type(cfg)
    assert hash(back) == hash(cfg)
    cfg.save(tmp_path)
    assert jaxzoo.load_config(tmp_path) == cfg
    data = cfg.to_dict()
    with pytest.raises(ValueError, match="has no field"):
        type(cfg).from_dict({**data, "bogus": 1})
    first = dataclasses.fields(cfg)[0].name
    with pytest.raises(ValueError, match="lacks field"):
        type(cfg).from_dict({k: v for k, v in data.items() if k != first})


def test_config_docs_list_every_field():
    for cls in (jrt.JRTConfig, jrt.RunConfig):
        for f in dataclasses.fields(cls):
            assert f"    {f.name} " in cls.__doc__, (cls.__name__, f.name)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_rebuild_continues_exactly(tmp_path):
    run = jrt.RunConfig(model=TINY, steps=4, batch_size=8)
    data = jrt.mqar(
        64, seq_len=16, num_kv_pairs=2, vocab_size=TINY.vocab_size - 1, seed=0
    )  # [MASK] = 63 reserved
    rng = jax.random.key(5)
    workdir = tmp_path / "run"
    jrt.train(run, data, workdir=workdir, rng=rng, num_steps=2, log_every=1, progress=False)

    rebuilt = jaxzoo.rebuild(workdir)
    assert rebuilt.config == run and rebuilt.step == 2 and isinstance(rebuilt.model, jrt.LM)
    state, history = jaxzoo.fit(
        rebuilt.state,
        jrt.make_train_step(rebuilt.config),
        jrt.batch_iterator(data, run.batch_size, seed=run.seed),
        num_steps=4,
        rng=rng,
        workdir=workdir,
        config=run,
        log_every=1,
        progress=False,
    )
    whole, whole_history = jrt.train(run, data, rng=rng, log_every=1, progress=False)
    assert int(state.step) == int(whole.step) == 4
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    np.testing.assert_allclose(history[-1]["loss"], whole_history[-1]["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(whole.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_resuming_with_another_run_config_raises(tmp_path):
    run = jrt.RunConfig(model=TINY, steps=2, batch_size=4)
    data = jrt.mqar(
        16, seq_len=16, num_kv_pairs=2, vocab_size=TINY.vocab_size - 1, seed=0
    )  # [MASK] = 63 reserved
    jrt.train(run, data, workdir=tmp_path, num_steps=1, progress=False)
    with pytest.raises(ValueError, match="holds a run with another config"):
        jrt.train(run.replace(seed=1), data, workdir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="holds a run with another config"):
        jrt.init_state(run.replace(model=TINY.replace(mlm_weight=0.5)), workdir=tmp_path)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_decay_mask_spares_embedding_biases_and_norm_scales():
    """As the reference's param_grouping: no decay on the (tied) embedding or biases; norm scales are
    spared unless decay_norm_scales reproduces the reference's accidental decay of flash-attn RMSNorm."""
    params = jrt.init_params(TINY, jax.random.key(0))
    mask = jrt.decay_mask(params)
    conv = mask["layer_0"]["conv"]
    assert conv["in_proj"]["kernel"] and not conv["in_proj"]["bias"]  # the bias is 2-D [2, inner]
    assert conv["conv_kernel"] and not mask["embedding"]
    assert not mask["layer_0"]["mixer_norm"]["scale"] and not mask["final_norm"]["scale"]
    assert mask["layer_1"]["pla"]["k_enc_proj"]["kernel"] and mask["layer_2"]["mlp"]["fc2"]["kernel"]
    ref = jrt.decay_mask(params, norm_scales=True)
    assert (
        ref["final_norm"]["scale"] and not ref["embedding"] and not ref["layer_0"]["conv"]["out_proj"]["bias"]
    )
    untied = jrt.init_params(TINY.replace(tie_embeddings=False), jax.random.key(0))
    assert jrt.decay_mask(untied)["lm_head"]["kernel"]
    # The optimizer applies it: one AdamW step with zero gradients moves only decayed weights.
    run = jrt.RunConfig(model=TINY, steps=10, optimizer=jrt.REFERENCE_OPTIMIZER.replace(warmup_steps=0))
    tx = jrt.make_optimizer(run)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert (
        float(jnp.abs(updates["embedding"]).max()) == 0
        and float(jnp.abs(updates["final_norm"]["scale"]).max()) == 0
    )
    assert float(jnp.abs(updates["layer_2"]["mlp"]["fc2"]["kernel"]).max()) > 0


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_sharding_examples_init_on_mesh():
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    names = set()
    for name, module, args in jrt.sharding_examples():
        variables, _ = jaxzoo.init_sharded(module, jax.random.key(0), *args, mesh=mesh)
        assert jnp.all(jnp.isfinite(jax.tree.leaves(variables)[0]))
        boxed = jax.eval_shape(lambda m=module, a=args: m.init(jax.random.key(0), *a))
        jaxzoo.check_axis_names(boxed)
        assert name == type(module).__name__
        names.add(name)
    assert names == {"BaseConv", "SlidingWindowAttention", "LinearAttention", "SwiGLU", "Block", "LM"}
