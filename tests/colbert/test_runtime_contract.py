"""colbert on the jaxzoo runtime: sharded state (Adam moments like their params, ZeRO-1), the sharded step
equals the single-device one, configs round-trip, a work directory rebuilds and continues exactly, resuming
with another config is refused, and every Linen module initialises sharded on a (data=4, model=2) mesh."""

import inspect

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import colbert
import jaxzoo
from colbert import BertConfig, ColBERTConfig, RunConfig, init_state, make_train_step, train

B, NWAY = 4, 2


def make_batch_arrays(cfg: ColBERTConfig, seed: int = 0) -> dict:
    """A random token batch with make_batch's layout: queries [B, Lq], documents [B * nway, Ld] with padding."""
    rng = np.random.default_rng(seed)
    lq, ld, v = cfg.query_maxlen, cfg.doc_maxlen, cfg.bert.vocab_size
    d_len = rng.integers(2, ld + 1, B * NWAY)
    d_attn = (np.arange(ld)[None] < d_len[:, None]).astype(np.int32)
    return {
        "q_ids": rng.integers(0, v, (B, lq)).astype(np.int32),
        "q_attn": np.ones((B, lq), np.int32),
        "d_ids": rng.integers(0, v, (B * NWAY, ld)).astype(np.int32),
        "d_attn": d_attn,
        "d_mask": d_attn * (rng.random((B * NWAY, ld)) < 0.9),
    }


@pytest.fixture(scope="module")
def mesh():
    return jaxzoo.make_mesh({"data": 4, "model": 2})


def adam_moments(opt_state):
    """The (mu, nu) trees of every Adam state in an optimizer state."""
    states = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    ]
    assert states, "no Adam state found"
    return [t for s in states for t in (s.mu, s.nu)]


def _spec(sharding, ndim):
    spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
    return tuple((e,) if isinstance(e, str) else (tuple(e) if e else None) for e in spec)


def check_optimizer_shardings(state, zero1: bool):
    model_sharded = 0
    for moments in adam_moments(state.opt_state):
        for m, p in zip(jax.tree.leaves(moments), jax.tree.leaves(state.params)):
            ps, ms = _spec(p.sharding, p.ndim), _spec(m.sharding, m.ndim)
            model_sharded += any(e and "model" in e for e in ps)
            if not zero1:
                assert ms == ps, (ms, ps)
                continue
            for dim, entry in enumerate(ps):  # the parameter's own sharding is kept
                if entry is not None:
                    assert ms[dim] == entry
            free = [d for d, e in enumerate(ps) if e is None and p.shape[d] % 4 == 0]
            assert any(e and "data" in e for e in ms) == bool(free), (p.shape, ps, ms)
    assert model_sharded > 0


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
@pytest.mark.parametrize("zero1", [False, True])
def test_sharded_state_and_step_equal_single_device(mesh, zero1):
    cfg = RunConfig.tiny(use_ib_negatives=True)  # dropout on: its masks must not depend on the sharding
    batch = make_batch_arrays(cfg.model)
    plan1 = init_state(cfg, jax.random.key(0))
    plan8 = init_state(cfg, jax.random.key(0), mesh=mesh, zero1=zero1)
    P = jax.sharding.PartitionSpec
    qk = plan8.state.params["bert"]["layer_0"]["query"]["kernel"]
    assert _spec(qk.sharding, 3) == _spec(jax.sharding.NamedSharding(mesh, P(None, "model")), 3)
    check_optimizer_shardings(plan8.state, zero1)
    step1 = make_train_step(cfg)
    step8 = make_train_step(cfg, mesh=mesh, state_sharding=plan8.shardings)
    s1, s8 = plan1.state, plan8.state
    rng = jax.random.key(7)
    for _ in range(3):
        s1, m1 = step1(s1, batch, rng)
        s8, m8 = step8(s8, batch, rng)
        np.testing.assert_allclose(float(m8["loss"]), float(m1["loss"]), rtol=1e-6, atol=1e-6)
    check_optimizer_shardings(s8, zero1)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6)


def test_pretrained_params_go_in_sharded(mesh):
    cfg = RunConfig.tiny()
    given = jax.device_get(init_state(cfg, jax.random.key(5)).state.params)
    plan = init_state(cfg, jax.random.key(0), params=given, mesh=mesh)
    for a, b in zip(jax.tree.leaves(given), jax.tree.leaves(plan.state.params)):
        np.testing.assert_array_equal(np.asarray(b), a)
    wrong = {**given, "linear": {"kernel": np.zeros((16, 4), np.float32)}}
    with pytest.raises(ValueError, match="shape"):
        init_state(cfg, jax.random.key(0), params=wrong)


CONFIGS = [
    BertConfig(),
    BertConfig.minilm(),
    BertConfig.bert_base(),
    BertConfig.tiny(),
    BertConfig.tiny(precision=jaxzoo.Precision.bf16()),
    ColBERTConfig(),
    ColBERTConfig.minilm(),
    ColBERTConfig.colbertv2(),
    ColBERTConfig.tiny(),
    RunConfig(),
    RunConfig.tiny(),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_configs_round_trip(cfg):
    back = type(cfg).from_json(cfg.to_json())
    assert back == cfg and type(back) is type(cfg)
    assert hash(back) == hash(cfg)
    data = cfg.to_dict()
    with pytest.raises(ValueError, match="no field"):
        type(cfg).from_dict({**data, "bogus": 1})
    first = next(k for k in data if not k.startswith("__"))
    with pytest.raises(ValueError, match="lacks field"):
        type(cfg).from_dict({k: v for k, v in data.items() if k != first})


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_rebuild_continues_exactly(tmp_path):
    cfg = RunConfig.tiny(steps=4)
    batches = [make_batch_arrays(cfg.model, seed=s) for s in range(4)]
    batch_fn = lambda s: batches[s]
    rng = jax.random.key(1)
    plan = init_state(cfg, jax.random.key(0))
    jaxzoo.fit(
        plan.state,
        make_train_step(cfg),
        batch_fn,
        num_steps=2,
        rng=rng,
        workdir=tmp_path,
        config=cfg,
        progress=False,
    )
    run = jaxzoo.rebuild(tmp_path)
    assert run.step == 2 and run.config == cfg and isinstance(run.model, colbert.ColBERT)
    resumed, _ = jaxzoo.fit(
        run.state,
        make_train_step(run.config),
        batch_fn,
        num_steps=4,
        rng=rng,
        workdir=tmp_path,
        config=cfg,
        progress=False,
    )
    whole, _ = jaxzoo.fit(
        init_state(cfg, jax.random.key(0)).state,
        make_train_step(cfg),
        batch_fn,
        num_steps=4,
        rng=rng,
        progress=False,
    )
    assert int(resumed.step) == 4
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_resuming_with_another_config_raises(tmp_path):
    cfg = RunConfig.tiny(steps=1)
    batch = make_batch_arrays(cfg.model)
    train(cfg, lambda s: batch, workdir=tmp_path, progress=False)
    other = cfg.replace(alpha=0.5)
    with pytest.raises(ValueError, match="another config"):
        init_state(other, jax.random.key(0), workdir=tmp_path)
    with pytest.raises(ValueError, match="another config"):
        train(other, lambda s: batch, workdir=tmp_path, progress=False)

@pytest.mark.slow

def test_sharding_examples_cover_every_module(mesh):
    examples = colbert.sharding_examples()
    defined = {
        name
        for module in (colbert.bert, colbert.modernbert, colbert.encoder, colbert.train)
        for name, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, nn.Module) and obj.__module__.startswith("colbert")
    }
    assert defined == {type(module).__name__ for _, module, _ in examples}
    for name, module, args in examples:
        boxed = jax.eval_shape(module.init, jax.random.key(0), *args)
        assert jaxzoo.check_axis_names(boxed) <= set(jaxzoo.AXES), name
        variables, _ = jaxzoo.init_sharded(module, jax.random.key(0), *args, mesh=mesh)
        assert jax.tree.leaves(variables), name
