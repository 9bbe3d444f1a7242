"""colbert.train: batch layout, the loss, the sharded step equals the single-device one, train + resume.

(The runtime contract: optimizer shardings, ZeRO-1, rebuild, config round trips: test_runtime_contract.py.)"""

import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colbert.bert import BertConfig, ColBERT, ColBERTConfig
from colbert.losses import colbert_loss
from colbert.tokenize import ColBERTTokenizer
from colbert.train import RunConfig, init_state, make_batch, make_loss_fn, make_train_step, train
from jaxzoo import OptimizerConfig
from jaxzoo.sharding import make_mesh

WORDS = ["what", "is", "late", "interaction", "hello", "world", "again", "col", "##bert", "a", "b"]
VOCAB = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.punctuation, *WORDS]
CFG = ColBERTConfig(
    bert=BertConfig(
        vocab_size=len(VOCAB),  # 50: divisible by the model axis
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    ),
    dim=8,
    query_maxlen=6,
    doc_maxlen=8,
)
QUERIES = ["what is col bert", "hello world", "late interaction", "a b"]
CANDIDATES = [
    ["col bert is late", "hello"],
    ["hello, world!", "b b"],
    ["late interaction again", "a"],
    ["a b", "world"],
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab")
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return ColBERTTokenizer.from_pretrained(path, CFG)


@pytest.fixture(scope="module")
def params():
    ids = jnp.zeros((1, 8), jnp.int32)
    return jax.jit(lambda k: ColBERT(CFG).init(k, ids, jnp.ones_like(ids))["params"])(jax.random.key(0))


def unboxed(p):
    import flax.linen as nn

    return nn.meta.unbox(p)


def test_make_batch_is_query_major(tokenizer):
    teacher = np.arange(8, dtype=np.float32).reshape(4, 2)
    batch = make_batch(tokenizer, QUERIES, CANDIDATES, teacher)
    assert batch["q_ids"].shape == (4, 6) and batch["d_ids"].shape == (8, 8)
    ids, attn, keep = tokenizer.documents([d for c in CANDIDATES for d in c], pad_to=8)
    np.testing.assert_array_equal(batch["d_ids"], ids)
    np.testing.assert_array_equal(batch["d_mask"], keep)
    np.testing.assert_array_equal(batch["d_ids"][2], tokenizer.documents(["hello, world!"], pad_to=8)[0][0])
    np.testing.assert_array_equal(batch["teacher"], teacher)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_loss_fn_is_colbert_loss_of_the_module(tokenizer, params):
    p = unboxed(params)
    batch = make_batch(tokenizer, QUERIES, CANDIDATES)
    loss_fn = make_loss_fn(CFG, nway=2, use_ib_negatives=True, dropout=False)
    loss, _ = jax.jit(loss_fn)(p, batch, jax.random.key(0))
    module = ColBERT(CFG)
    Q = module.apply({"params": p}, batch["q_ids"], batch["q_attn"])
    D = module.apply({"params": p}, batch["d_ids"], batch["d_attn"])
    want, _ = colbert_loss(Q, D, None, batch["d_mask"].astype(bool), nway=2, use_ib_negatives=True)
    np.testing.assert_allclose(loss, want, atol=1e-5, rtol=1e-5)


def run_config(**changes):
    opt = OptimizerConfig(algorithm="sgd", learning_rate=0.5, b1=0.0)
    return RunConfig(**{"model": CFG, "optimizer": opt, "nway": 2, "steps": 8, "batch_size": 4, **changes})


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_sharded_step_equals_single_device(tokenizer, params):
    """With dropout on: the dropout masks must not depend on the sharding either."""
    batch = make_batch(tokenizer, QUERIES, CANDIDATES, np.ones((4, 2), np.float32))
    cfg = run_config(use_ib_negatives=True, dropout=True)
    plan1 = init_state(cfg, jax.random.key(0), params=unboxed(params))
    step1 = make_train_step(cfg, donate=False)
    mesh = make_mesh({"data": 4, "model": 2})
    plan8 = init_state(cfg, jax.random.key(0), params=unboxed(params), mesh=mesh)
    step8 = make_train_step(cfg, mesh=mesh, state_sharding=plan8.shardings, donate=False)
    state1, state8 = plan1.state, plan8.state
    assert state8.params["bert"]["layer_0"]["mlp_in"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(
        None, "model"
    )
    rng = jax.random.key(3)
    for _ in range(2):
        state1, m1 = step1(state1, batch, rng)
        state8, m8 = step8(state8, batch, rng)
        np.testing.assert_allclose(m8["loss"], m1["loss"], atol=1e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state8.params)):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # > 10 s on 2 cores; CI's second pass runs it
def test_train_learns_checkpoints_and_resumes(tokenizer, params, tmp_path):
    batch = make_batch(tokenizer, QUERIES, CANDIDATES)
    opt = OptimizerConfig(algorithm="adam", learning_rate=3e-3)
    cfg = run_config(optimizer=opt, steps=6, dropout=False)
    state, history = train(
        cfg,
        lambda s: batch,
        params=unboxed(params),
        workdir=tmp_path,
        log_every=1,
        checkpoint_every=3,
        progress=False,
    )
    assert [r["step"] for r in history] == list(range(1, 7))
    assert history[-1]["loss"] < history[0]["loss"]
    # A longer run is another config: refused by default; allowed, it resumes from step 6 and runs two steps.
    longer = cfg.replace(steps=8)
    with pytest.raises(ValueError, match="another config"):
        train(longer, lambda s: batch, params=unboxed(params), workdir=tmp_path, progress=False)
    plan = init_state(longer, jax.random.key(0), workdir=tmp_path, allow_config_change=True)
    assert plan.restored_step == 6
    import jaxzoo

    resumed, history2 = jaxzoo.fit(
        plan.state,
        make_train_step(longer),
        lambda s: batch,
        num_steps=8,
        rng=jax.random.key(0),
        workdir=tmp_path,
        config=longer,
        allow_config_change=True,
        log_every=1,
        progress=False,
    )
    assert int(resumed.step) == 8 and [r["step"] for r in history2] == list(range(1, 9))
    assert history2[:6] == history


def test_make_batch_needs_one_candidate_list_per_query(tokenizer):
    with pytest.raises(ValueError, match="one list per query"):
        make_batch(tokenizer, QUERIES, CANDIDATES[:3])


def test_make_batch_needs_equal_nway(tokenizer):
    with pytest.raises(ValueError, match="same number of candidates"):
        make_batch(tokenizer, QUERIES[:2], [["a", "b"], ["a"]])


def test_make_batch_teacher_shape(tokenizer):
    with pytest.raises(ValueError, match=r"teacher_scores must be \[B, nway\]"):
        make_batch(tokenizer, QUERIES, CANDIDATES, np.zeros((4, 3)))


def test_run_config_rejects_bad_nway():
    with pytest.raises(ValueError, match="nway must be at least 1"):
        run_config(nway=0)
    with pytest.raises(ValueError, match="nway must be at least 1"):
        make_loss_fn(CFG, nway=0)
