"""jrt.data against naive re-implementations (loops over examples and positions) and task invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrt.data import (
    IGNORE,
    SD_NO,
    SD_PREFIX,
    SD_SEP_ANSWER,
    SD_SEP_SETS,
    SD_YES,
    batch_iterator,
    mqar,
    recall_accuracy,
    repeat_context,
    set_disjointness,
)

# ----------------------------------------------------------------------------------------------- MQAR


def naive_mqar(n, seq_len, kv, vocab, power_a, passes, random_non_queries, seed):
    """MQAR token by token, with the zoology generator's draws (keys, values, gaps, then filler)."""
    rs = np.random.RandomState(seed)
    half = vocab // 2
    keys = [rs.choice(np.arange(1, half), size=kv, replace=False) for _ in range(n)]
    values = [rs.choice(np.arange(half, vocab), size=kv, replace=False) for _ in range(n)]
    space = (seq_len - 2 * kv * passes) // 2
    weights = [power_a * (g + 1) ** (power_a - 1) for g in range(space)]
    p = np.array(weights) / sum(weights)
    gaps = [rs.choice(np.arange(space), size=kv, replace=False, p=p) for _ in range(n)]
    inputs = np.zeros((n, seq_len), np.int64)
    labels = np.full((n, seq_len), -100, np.int64)
    for e in range(n):
        pos = 0
        for _ in range(passes):
            for j in range(kv):
                inputs[e, pos] = keys[e][j]
                inputs[e, pos + 1] = values[e][j]
                pos += 2
        for j in range(kv):
            q = pos + 2 * gaps[e][j]
            inputs[e, q] = keys[e][j]
            labels[e, q] = values[e][j]  # the value is the next token after the query key
    if random_non_queries:
        noise = rs.randint(0, vocab, size=inputs.shape)
        for e in range(n):
            for t in range(seq_len):
                if inputs[e, t] == 0:
                    inputs[e, t] = noise[e, t]
    return inputs, labels


@pytest.mark.parametrize(
    "seq_len,kv,vocab,power_a,passes,random_nq",
    [
        (16, 2, 32, 0.01, 1, False),
        (64, 8, 8192, 0.01, 1, True),
        (64, 4, 128, 1.0, 2, True),
        (48, 4, 64, 0.5, 3, False),
    ],
)
def test_mqar_matches_naive(seq_len, kv, vocab, power_a, passes, random_nq):
    got = mqar(
        7,
        seq_len=seq_len,
        num_kv_pairs=kv,
        vocab_size=vocab,
        power_a=power_a,
        num_passes=passes,
        random_non_queries=random_nq,
        seed=3,
    )
    inputs, labels = naive_mqar(7, seq_len, kv, vocab, power_a, passes, random_nq, seed=3)
    assert got["input_ids"].dtype == np.int32 and got["labels"].dtype == np.int32
    np.testing.assert_array_equal(got["input_ids"], inputs)
    np.testing.assert_array_equal(got["labels"], labels)


@pytest.mark.parametrize("passes", [1, 2])
def test_mqar_invariants(passes):
    seq_len, kv, vocab = 128, 8, 8192
    data = mqar(50, seq_len=seq_len, num_kv_pairs=kv, vocab_size=vocab, num_passes=passes, seed=1)
    ctx = 2 * kv * passes
    for x, y in zip(data["input_ids"], data["labels"]):
        keys, values = x[0 : 2 * kv : 2], x[1 : 2 * kv : 2]
        assert np.all((keys >= 1) & (keys < vocab // 2)) and len(set(keys)) == kv
        assert np.all((values >= vocab // 2) & (values < vocab)) and len(set(values)) == kv
        for p in range(1, passes):  # every pass writes the same pairs
            np.testing.assert_array_equal(x[2 * kv * p : 2 * kv * (p + 1)], x[: 2 * kv])
        scored = np.flatnonzero(y != IGNORE)
        assert len(scored) == kv  # each key queried exactly once
        assert np.all(scored >= ctx) and np.all((scored - ctx) % 2 == 0)  # in the query region, even offsets
        answer = dict(zip(keys, values))
        assert sorted(x[scored]) == sorted(keys)
        for t in scored:
            assert y[t] == answer[x[t]]


def test_mqar_filler_is_zero_without_random_non_queries():
    data = mqar(20, seq_len=64, num_kv_pairs=4, random_non_queries=False, seed=0)
    filler = data["labels"] == IGNORE
    filler[:, :8] = False  # the context
    assert np.all(data["input_ids"][filler] == 0)
    noisy = mqar(20, seq_len=64, num_kv_pairs=4, random_non_queries=True, seed=0)
    assert np.mean(noisy["input_ids"][filler] != 0) > 0.99


@pytest.mark.parametrize("power_a", [0.01, 1.0])
def test_mqar_gap_distribution_is_the_power_law(power_a):
    # One pair, so the gap is a single draw from p(g) ∝ (g + 1) ** (a - 1), g in [0, space).
    n, seq_len = 4000, 18
    data = mqar(n, seq_len=seq_len, num_kv_pairs=1, vocab_size=64, power_a=power_a, seed=5)
    pos = np.argmax(data["labels"] != IGNORE, axis=1)
    gaps = (pos - 2) // 2
    space = (seq_len - 2) // 2
    p = np.array([(g + 1) ** (power_a - 1) for g in range(space)])
    p = p / p.sum()
    freq = np.bincount(gaps, minlength=space) / n
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) < 5 * sigma + 1e-12), (freq, p)


def test_mqar_is_a_function_of_the_seed():
    a, b, c = (mqar(4, seq_len=32, num_kv_pairs=4, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert not np.array_equal(a["input_ids"], c["input_ids"])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(seq_len=63), "even seq_len"),
        (dict(seq_len=64, vocab_size=64), "vocab_size > seq_len"),
        (dict(seq_len=32, num_kv_pairs=9, num_passes=1), "fit the context"),
        (dict(seq_len=64, num_kv_pairs=8, num_passes=4), "fit the context"),
        (dict(num_kv_pairs=0), "num_kv_pairs >= 1"),
        (dict(num_passes=0), "num_passes >= 1"),
        (dict(power_a=0.0), "power_a > 0"),
    ],
)
def test_mqar_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mqar(2, **kwargs)


def test_mqar_needs_examples():
    with pytest.raises(ValueError, match="num_examples >= 1"):
        mqar(0)


# ------------------------------------------------------------------------------------ set disjointness


def naive_sd(n, first_len, second_len, vocab, seed):
    """The release's construction, example by example (target='token')."""
    rs = np.random.RandomState(seed)
    rows = []
    for _ in range(n):
        pool = rs.permutation(np.arange(4, vocab))
        a = rs.choice(pool[: vocab // 2], first_len, replace=False)
        b = rs.choice(pool[vocab // 2 :], second_len, replace=False)
        shared = a[rs.randint(first_len)]
        b[rs.randint(second_len)] = shared
        rows.append(([1, *a, 2, *b, 3], shared))
    return rows


@pytest.mark.parametrize("first_len,second_len,vocab", [(4, 16, 2048), (16, 4, 2048), (1, 3, 16), (5, 5, 64)])
def test_set_disjointness_matches_naive(first_len, second_len, vocab):
    data = set_disjointness(9, first_len=first_len, second_len=second_len, vocab_size=vocab, seed=2)
    for (tokens, answer), x, y in zip(
        naive_sd(9, first_len, second_len, vocab, 2), data["input_ids"], data["labels"]
    ):
        np.testing.assert_array_equal(x, tokens)
        assert y[-1] == answer and np.all(y[:-1] == IGNORE)


@pytest.mark.parametrize("first_len,second_len", [(4, 16), (16, 4)])
def test_set_disjointness_token_invariants(first_len, second_len):
    data = set_disjointness(100, first_len=first_len, second_len=second_len, vocab_size=256, seed=0)
    assert data["input_ids"].shape == (100, first_len + second_len + 3)
    for x, y in zip(data["input_ids"], data["labels"]):
        assert x[0] == SD_PREFIX and x[first_len + 1] == SD_SEP_SETS and x[-1] == SD_SEP_ANSWER
        a, b = x[1 : first_len + 1], x[first_len + 2 : -1]
        assert len(set(a)) == first_len and len(set(b)) == second_len
        assert min(a.min(), b.min()) >= 4
        assert set(a) & set(b) == {y[-1]}


def test_set_disjointness_binary():
    data = set_disjointness(400, first_len=6, second_len=6, vocab_size=64, target="binary", seed=0)
    answers = data["labels"][:, -1]
    assert set(answers) <= {SD_NO, SD_YES}
    assert 0.4 < np.mean(answers == SD_YES) < 0.6
    for x, ans in zip(data["input_ids"], answers):
        a, b = set(x[1:7]), set(x[8:-1])
        assert min(a | b) >= 6  # the answer tokens never appear in a set
        assert len(a & b) == (1 if ans == SD_YES else 0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(target="count"), "'token' or 'binary'"),
        (dict(first_len=0), "set sizes >= 1"),
        (dict(first_len=9, second_len=2, vocab_size=16), "larger vocab_size"),
        (dict(first_len=2, second_len=5, vocab_size=16), "larger vocab_size"),
        (dict(num_examples=0), "num_examples >= 1"),
    ],
)
def test_set_disjointness_errors(kwargs, match):
    kwargs = {"num_examples": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        set_disjointness(**kwargs)


# -------------------------------------------------------------------------------------- JRT-Prompt


@pytest.mark.parametrize("times", [1, 2, 3])
def test_repeat_context_matches_naive(times):
    data = mqar(5, seq_len=32, num_kv_pairs=4, vocab_size=64, seed=0)
    ctx = 8
    got = repeat_context(data, ctx, times)
    for e in range(5):
        x, y = list(data["input_ids"][e]), list(data["labels"][e])
        want_x = x[:ctx] * (times - 1) + x
        want_y = [IGNORE] * (ctx * (times - 1)) + y
        assert list(got["input_ids"][e]) == want_x
        assert list(got["labels"][e]) == want_y
    # The queries and their answers are unchanged: the same scored (input, target) pairs.
    scored = got["labels"] != IGNORE
    assert scored.sum() == (data["labels"] != IGNORE).sum()
    np.testing.assert_array_equal(got["input_ids"][scored], data["input_ids"][data["labels"] != IGNORE])


def test_repeat_context_on_set_disjointness():
    data = set_disjointness(3, first_len=4, second_len=8, vocab_size=64, seed=0)
    got = repeat_context(data, 4 + 8 + 2, 2)
    assert got["input_ids"].shape == (3, 2 * 14 + 1)
    np.testing.assert_array_equal(got["input_ids"][:, :14], got["input_ids"][:, 14:28])
    assert np.all(got["input_ids"][:, -1] == SD_SEP_ANSWER)
    np.testing.assert_array_equal(got["labels"][:, -1], data["labels"][:, -1])


@pytest.mark.parametrize(
    "batch,ctx,times,match",
    [
        ({"input_ids": np.zeros((2, 4, 1)), "labels": np.zeros((2, 4, 1))}, 2, 2, "same shape"),
        ({"input_ids": np.zeros((2, 4)), "labels": np.zeros((2, 5))}, 2, 2, "same shape"),
        ({"input_ids": np.zeros((2, 4)), "labels": np.zeros((2, 4))}, 5, 2, "context_len <= L"),
        ({"input_ids": np.zeros((2, 4)), "labels": np.zeros((2, 4))}, 2, 0, "times >= 1"),
    ],
)
def test_repeat_context_errors(batch, ctx, times, match):
    with pytest.raises(ValueError, match=match):
        repeat_context(batch, ctx, times)


# ---------------------------------------------------------------------------------------- metric


def naive_accuracy(logits, labels):
    accs = []
    for b in range(labels.shape[0]):
        hits, count = 0, 0
        for t in range(labels.shape[1]):
            if labels[b, t] != -100:
                count += 1
                hits += int(np.argmax(logits[b, t]) == labels[b, t])
        if count:
            accs.append(hits / count)
    return np.mean(accs) if accs else 0.0


@pytest.mark.parametrize("shape", [(3, 5, 7), (6, 16, 11), (1, 4, 3)])
def test_recall_accuracy_matches_naive(shape):
    rng = np.random.default_rng(sum(shape))
    logits = rng.normal(size=shape).astype(np.float32)
    labels = rng.integers(0, shape[2], size=shape[:2])
    labels = np.where(rng.random(shape[:2]) < 0.5, labels, IGNORE)
    labels[0] = IGNORE  # an example without scored positions is left out of the mean
    # make some predictions right, so the metric is neither 0 nor 1
    right = (labels != IGNORE) & (rng.random(shape[:2]) < 0.5)
    b, t = np.nonzero(right)
    logits[b, t, labels[b, t]] = 100.0
    got = jax.jit(recall_accuracy)(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(got), naive_accuracy(logits, labels), atol=1e-6)


def test_recall_accuracy_errors():
    with pytest.raises(ValueError, match=r"logits \[B, L, V\] and labels \[B, L\]"):
        recall_accuracy(jnp.zeros((2, 3)), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"logits \[B, L, V\] and labels \[B, L\]"):
        recall_accuracy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4), jnp.int32))


# --------------------------------------------------------------------------------------- batches


def test_batch_iterator_covers_each_epoch_once_and_is_pure():
    data = {"input_ids": np.arange(10)[:, None] * np.ones((1, 3), int), "labels": np.arange(10)[:, None]}
    fn = batch_iterator(data, 3, seed=1)
    epoch0 = np.concatenate([fn(s)["labels"][:, 0] for s in range(3)])
    assert len(set(epoch0)) == 9  # 3 full batches of 3, the partial one dropped
    epoch1 = np.concatenate([fn(s)["labels"][:, 0] for s in range(3, 6)])
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(
        fn(4)["input_ids"][:, 0], batch_iterator(data, 3, seed=1)(4)["labels"][:, 0]
    )
    np.testing.assert_array_equal(fn(2)["input_ids"][:, 0], fn(2)["labels"][:, 0])


def test_batch_iterator_errors():
    with pytest.raises(ValueError, match="same first dimension"):
        batch_iterator({"a": np.zeros(3), "b": np.zeros(4)}, 2)
    with pytest.raises(ValueError, match="batch_size <= 3"):
        batch_iterator({"a": np.zeros(3)}, 4)
