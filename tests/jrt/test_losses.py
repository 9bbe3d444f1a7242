"""The JRT objective (NTP on positions >= M + 0.25 MLM on the masked prefix) and Based's NTP, vs numpy loops."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrt
from jrt.model import apply_fn

CFG = jrt.JRTConfig.tiny(init_std=0.3)
BASED = jrt.JRTConfig.tiny_based(init_std=0.3)


@pytest.fixture(scope="module")
def params():
    return jrt.init_params(CFG, jax.random.key(0))


@functools.cache
def jitted(cfg):
    loss = jax.jit(lambda p, b, r: jrt.loss_fn(p, b, r, cfg))
    logits = apply_fn(cfg)
    return loss, logits


def make_batch(seed, b=2, n=16, ignore_frac=0.3, padded=False):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, CFG.vocab_size - 1, (b, n))
    labels = rng.integers(0, CFG.vocab_size - 1, (b, n))
    labels[rng.random((b, n)) < ignore_frac] = -100
    batch = {"input_ids": jnp.asarray(x, jnp.int32), "labels": jnp.asarray(labels, jnp.int32)}
    if padded:
        batch["mask"] = jnp.asarray(np.arange(n)[None] >= np.array([[0], [3]])[:b])
    return batch


def np_ce(logits, target):
    z = logits.astype(np.float64)
    return np.log(np.exp(z - z.max()).sum()) + z.max() - z[target]


@pytest.mark.parametrize("padded", [False, True])
def test_jrt_loss_vs_loops(params, padded):
    batch = make_batch(1, padded=padded)
    rng = jax.random.key(5)
    loss_f, logits_f = jitted(CFG)
    loss, metrics = loss_f(params, batch, rng)
    mask = batch.get("mask", jnp.ones(batch["input_ids"].shape, bool))
    masked = np.asarray(jrt.mlm_mask(rng, CFG, batch["input_ids"].shape, batch.get("mask")))
    assert masked.any(), "pick a seed that masks at least one prefix token"
    x = np.asarray(batch["input_ids"])
    inputs = np.where(masked, CFG.mask_id, x)
    logits = np.asarray(logits_f(params, jnp.asarray(inputs), mask))
    labels, m = np.asarray(batch["labels"]), CFG.encoder_len
    ntp, mlm = [], []
    for b in range(x.shape[0]):
        r = -1  # the position among the row's real tokens (left padding shifts nothing)
        for i in range(x.shape[1]):
            if not mask[b, i]:
                continue
            r += 1
            if r >= m and labels[b, i] != -100:
                ntp.append(np_ce(logits[b, i], labels[b, i]))
            if masked[b, i]:
                assert r < m
                mlm.append(np_ce(logits[b, i], x[b, i]))  # the same-position original token
    want = np.mean(ntp) + 0.25 * np.mean(mlm)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["ntp_loss"]), np.mean(ntp), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["mlm_loss"]), np.mean(mlm), rtol=1e-5)
    assert int(metrics["ntp_tokens"]) == len(ntp) and int(metrics["mlm_tokens"]) == len(mlm)


def test_labels_outside_loss_region_do_not_matter(params):
    batch = make_batch(2, ignore_frac=0.0)
    loss_f, _ = jitted(CFG)
    rng = jax.random.key(6)
    base, _ = loss_f(params, batch, rng)
    m = CFG.encoder_len
    prefix_changed = dict(batch, labels=batch["labels"].at[:, :m].set(7))  # NTP ignores positions < M
    np.testing.assert_allclose(float(loss_f(params, prefix_changed, rng)[0]), float(base), rtol=1e-6)
    ignored = dict(batch, labels=batch["labels"].at[0, m + 2].set(-100))
    assert abs(float(loss_f(params, ignored, rng)[0]) - float(base)) > 1e-4  # a loss position: it counts


def test_based_loss_is_plain_next_token_on_all_labels():
    p = jrt.init_params(BASED, jax.random.key(1))
    batch = make_batch(3)
    loss_f, logits_f = jitted(BASED)
    loss, metrics = loss_f(p, batch, jax.random.key(0))
    logits = np.asarray(logits_f(p, batch["input_ids"], jnp.ones(batch["input_ids"].shape, bool)))
    labels = np.asarray(batch["labels"])
    ces = [np_ce(logits[b, i], labels[b, i]) for b, i in zip(*np.nonzero(labels != -100))]
    np.testing.assert_allclose(float(loss), np.mean(ces), rtol=1e-5)
    assert float(metrics["mlm_tokens"]) == 0


def test_mlm_mask_rate_and_region():
    cfg = jrt.JRTConfig.tiny(encoder_len=40)
    pad = jnp.asarray(np.arange(64)[None] >= np.arange(0, 512, 2)[:, None] % 16)  # [256, 64], ragged
    masked = np.asarray(jrt.mlm_mask(jax.random.key(0), cfg, (256, 64), pad))
    rank = np.cumsum(np.asarray(pad), axis=1) - 1  # each row's prefix: its first 40 real tokens
    prefix = np.asarray(pad) & (rank < 40)
    assert not masked[~prefix].any()
    rate = masked[prefix].mean()
    assert abs(rate - 0.15) < 0.01  # ~9000 draws: the standard error is 0.004
