"""SAELens / Gemma Scope formats, activations from Flax models (store, splice, steer), and evaluate()."""

import json
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sae

TOL = dict(rtol=1e-5, atol=1e-5)


def random_params(cfg, seed=0):
    params, _ = sae.init_params(cfg, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    out = {k: np.asarray(v) + 0.1 * rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    if "threshold" in out:
        out["threshold"] = np.abs(out["threshold"]) + 0.05
    return {k: jnp.asarray(v) for k, v in out.items()}


# --- interop --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sae.ARCHITECTURES)
def test_saelens_folder_round_trip(tmp_path, arch):
    cfg = sae.SAEConfig(d_in=8, d_sae=16, architecture=arch, k=3, normalize_activations=False)
    params = random_params(cfg)
    sae.save_saelens(params, cfg, tmp_path, hook_name="layer_1")
    raw = json.loads((tmp_path / "cfg.json").read_text())
    assert raw["architecture"] == {"relu": "standard", "batchtopk": "jumprelu", "matryoshka": "jumprelu"}.get(
        arch, arch
    )
    cfg2, params2 = sae.load_saelens(tmp_path)
    x = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    np.testing.assert_allclose(sae.apply(cfg2, params2, x)[0], sae.apply(cfg, params, x)[0], **TOL)


def test_saelens_folder_errors(tmp_path):
    cfg = sae.SAEConfig(d_in=8, d_sae=16, architecture="jumprelu")
    params = random_params(cfg)
    with pytest.raises(ValueError, match="cfg.json is missing"):
        sae.load_saelens(tmp_path)
    sae.save_saelens({k: v for k, v in params.items()}, cfg, tmp_path)
    from safetensors.numpy import load_file, save_file

    weights = load_file(str(tmp_path / "sae_weights.safetensors"))
    save_file(
        {k: v for k, v in weights.items() if k != "threshold"}, str(tmp_path / "sae_weights.safetensors")
    )
    with pytest.raises(ValueError, match="has no 'threshold'"):
        sae.load_saelens(tmp_path)
    weights["W_dec"] = np.zeros((16, 9), np.float32)
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=r"'W_dec' has shape \(16, 9\); expected \(16, 8\)"):
        sae.load_saelens(tmp_path)
    with pytest.raises(ValueError, match="has no 'b_dec'"):
        sae.save_saelens({k: v for k, v in params.items() if k != "b_dec"}, cfg, tmp_path / "other")


def test_gemmascope_npz_round_trip(tmp_path):
    cfg = sae.SAEConfig.gemmascope(d_in=8, d_sae=16)  # uncentred encoder: the weights round-trip exactly
    params = random_params(cfg)
    path = sae.save_gemmascope(params, cfg, tmp_path)
    cfg2, params2 = sae.load_gemmascope(path)
    assert (cfg2.d_in, cfg2.d_sae, cfg2.architecture) == (8, 16, "jumprelu")
    for k in params:
        np.testing.assert_array_equal(params[k], params2[k])
    np.savez(tmp_path / "bad.npz", W_enc=np.zeros((8, 16), np.float32))
    with pytest.raises(ValueError, match="has no 'W_dec'"):
        sae.load_gemmascope(tmp_path / "bad.npz")


@pytest.mark.parametrize("arch", ["relu", "gated", "topk", "jumprelu"])
def test_round_trip_through_saelens(tmp_path, arch):
    """Our folder loads in SAELens with the same forward pass, and SAELens' save loads back in ours."""
    pytest.importorskip("sae_lens")
    torch = pytest.importorskip("torch")
    from sae_lens import SAE as SLSAE

    cfg = sae.SAEConfig(d_in=8, d_sae=16, architecture=arch, k=3, normalize_activations=False)
    params = random_params(cfg, seed=3)
    sae.save_saelens(params, cfg, tmp_path / "ours")
    theirs = SLSAE.load_from_disk(str(tmp_path / "ours"))
    x = np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32)
    with torch.no_grad():
        f_theirs = theirs.encode(torch.from_numpy(x)).numpy()
        x_hat_theirs = theirs.decode(torch.from_numpy(f_theirs)).numpy()
    x_hat, f = sae.apply(cfg, params, x)
    np.testing.assert_allclose(f, f_theirs, **TOL)
    np.testing.assert_allclose(x_hat, x_hat_theirs, **TOL)
    theirs.save_model(str(tmp_path / "theirs"))
    cfg2, params2 = sae.load_saelens(tmp_path / "theirs")
    np.testing.assert_allclose(sae.apply(cfg2, params2, x)[0], x_hat, **TOL)


# --- activations from a Flax model ----------------------------------------------------------------------


class Layer(nn.Module):
    @nn.compact
    def __call__(self, h):
        h = h + jnp.tanh(nn.Dense(h.shape[-1], name="dense")(h))
        self.sow("intermediates", "resid_post", h)
        return h


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, attention_mask):  # [B, L, D] -> [B, L, D]
        for i in range(2):
            x = Layer(name=f"layer_{i}")(x)
        return x * attention_mask[..., None]


D = 8
MODEL = Tiny()
VARS = MODEL.init(jax.random.key(0), jnp.zeros((1, 3, D)), jnp.ones((1, 3)))


def np_layer(i, h):
    p = VARS["params"][f"layer_{i}"]["dense"]
    return h + np.tanh(h @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"]))


def inputs(n_batches=3, b=4, length=5, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        mask = (np.arange(length)[None] < rng.integers(1, length + 1, size=(b, 1))).astype(np.int32)
        out.append({"x": rng.normal(size=(b, length, D)).astype(np.float32), "attention_mask": mask})
    return out


def test_activation_store_drops_padding_and_serves_a_permutation():
    batches = inputs()
    want = np.concatenate(
        [np_layer(0, b["x"].astype(np.float64))[b["attention_mask"].astype(bool)] for b in batches]
    )
    store = sae.ActivationStore(
        MODEL.apply, VARS, batches, "layer_0/resid_post", batch_size=4, buffer_size=16
    )
    np.testing.assert_allclose(store.collect(), want, **TOL)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        served = np.concatenate(list(store))
    assert len(served) == len(want) // 4 * 4
    dropped = len(want) % 4
    assert [str(w.message) for w in record if "dropped" in str(w.message)] == (
        [
            f"ActivationStore dropped the last {dropped} activations (fewer than batch_size=4); pass "
            "drop_remainder=False to get them as a smaller batch, or use collect()."
        ]
        if dropped
        else []
    )
    kept = sae.ActivationStore(
        MODEL.apply, VARS, batches, "layer_0/resid_post", batch_size=4, buffer_size=16, drop_remainder=False
    )
    all_rows = list(kept)
    assert sum(len(b) for b in all_rows) == len(want) and len(all_rows[-1]) == (dropped or 4)
    assert not np.allclose(served, want[: len(served)])  # shuffled
    key = lambda a: np.round(a, 4).tolist()
    assert all(any(np.allclose(row, w, atol=1e-5) for w in want) for row in served)
    assert len({tuple(r) for r in key(served)}) == len(served)
    # the module output (capture_intermediates) reads the same activation
    both = sae.ActivationStore(MODEL.apply, VARS, batches, "layer_0", batch_size=4, buffer_size=16)
    np.testing.assert_allclose(both.collect(), want, **TOL)


def test_splice_steer_and_ablate():
    cfg = sae.SAEConfig(d_in=D, d_sae=16, architecture="topk", k=3, normalize_activations=False)
    sp = random_params(cfg)
    batch = inputs(1)[0]
    clean = np.asarray(MODEL.apply(VARS, **batch))
    with_error = sae.splice(MODEL.apply, VARS, sp, "layer_0/resid_post", cfg=cfg, use_error_term=True)
    np.testing.assert_allclose(with_error(**batch), clean, **TOL)
    h0 = np_layer(0, batch["x"].astype(np.float64))
    x_hat = np.asarray(sae.apply(cfg, sp, h0.astype(np.float32))[0], np.float64)
    want = np_layer(1, x_hat) * batch["attention_mask"][..., None]
    np.testing.assert_allclose(sae.splice(MODEL.apply, VARS, sp, "layer_0", cfg=cfg)(**batch), want, **TOL)
    direction = np.asarray(sae.decoder_directions(sp))[5]
    steered = sae.steer(MODEL.apply, VARS, sp, "layer_1", feature=5, scale=2.5)(**batch)
    want = (np_layer(1, h0) + 2.5 * direction) * batch["attention_mask"][..., None]
    np.testing.assert_allclose(steered, want, **TOL)
    zero = sae.ablate(MODEL.apply, VARS, "layer_0")(**batch)
    np.testing.assert_allclose(
        zero, np_layer(1, np.zeros_like(h0)) * batch["attention_mask"][..., None], **TOL
    )
    with pytest.raises(ValueError, match="matched no module call"):
        sae.splice(MODEL.apply, VARS, sp, "layer_7", cfg=cfg)(**batch)
    with pytest.raises(ValueError, match="feature must be in"):
        sae.steer(MODEL.apply, VARS, sp, "layer_1", feature=16, scale=1.0)


def test_splice_steer_ablate_refuse_a_jitted_apply_and_jit_outside_works():
    """A jitted apply_fn would cache the spliced trace and later plain calls would return spliced outputs:
    a clear error instead; jitting the spliced function is the supported way and stays separate."""
    cfg = sae.SAEConfig(d_in=D, d_sae=16, architecture="topk", k=3, normalize_activations=False)
    sp = random_params(cfg)
    batch = inputs(1)[0]
    jitted = jax.jit(MODEL.apply)
    for make in (
        lambda: sae.splice(jitted, VARS, sp, "layer_0", cfg=cfg),
        lambda: sae.steer(jitted, VARS, sp, "layer_1", feature=1, scale=1.0),
        lambda: sae.ablate(jitted, VARS, "layer_0"),
    ):
        with pytest.raises(ValueError, match="already jax.jit-compiled; pass the plain function"):
            make()
    spliced = jax.jit(sae.splice(MODEL.apply, VARS, sp, "layer_0", cfg=cfg))
    out = np.asarray(spliced(**batch))
    clean = np.asarray(jitted(VARS, **batch))
    np.testing.assert_allclose(clean, np.asarray(MODEL.apply(VARS, **batch)), **TOL)
    assert not np.allclose(out, clean)


def test_evaluate_against_numpy():
    cfg = sae.SAEConfig(d_in=D, d_sae=16, architecture="topk", k=3, normalize_activations=False)
    sp = random_params(cfg, seed=4)
    x = (np.random.default_rng(5).normal(size=(50, D)) + 3.0).astype(np.float32)
    x_hat, f = (np.asarray(a, np.float64) for a in sae.apply(cfg, sp, x))
    x64 = x.astype(np.float64)
    sq = sum(((x64[t] - x_hat[t]) ** 2).sum() for t in range(50))
    var = sum(((x64[t] - x64.mean(0)) ** 2).sum() for t in range(50))
    fires = (f != 0).sum(0)
    losses = {"clean": 1.0, "sae": 1.5, "zero": 3.0}
    got = sae.evaluate(cfg, sp, x, batch_size=16, downstream=losses.__getitem__)  # 4 batches, pooled
    np.testing.assert_allclose(got["l0"], (f != 0).sum() / 50, **TOL)
    np.testing.assert_allclose(got["mse"], sq / 50, **TOL)
    np.testing.assert_allclose(got["explained_variance"], 1 - sq / var, **TOL)
    np.testing.assert_allclose(got["normalized_mse"], sq / var, **TOL)
    np.testing.assert_allclose(got["dead_fraction"], np.mean(fires == 0), **TOL)
    np.testing.assert_allclose(got["dense_fraction"], np.mean(fires / 50 > 0.1), **TOL)
    ratios = [np.linalg.norm(x_hat[t]) / np.linalg.norm(x64[t]) for t in range(50)]
    np.testing.assert_allclose(got["l2_ratio"], np.mean(ratios), **TOL)
    np.testing.assert_allclose(
        got["relative_reconstruction_bias"], (x_hat**2).sum() / (x64 * x_hat).sum(), **TOL
    )
    assert sum(got["density_histogram"]["counts"]) == 16
    assert got["score_recovered"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"shape \[..., d_in=8\]"):
        sae.evaluate(cfg, sp, np.zeros((4, 5), np.float32))


def test_activations_written_to_shards_train_from_disk(tmp_path):
    """ActivationStore.write_shards -> jaxzoo.data shards -> sae.train streams them (memory-mapped, grain)."""
    batches = inputs(n_batches=6, b=8, length=5)
    store = sae.ActivationStore(
        MODEL.apply, VARS, batches, "layer_0/resid_post", batch_size=4, buffer_size=16
    )
    shards = store.write_shards(tmp_path / "acts", rows_per_shard=32)
    np.testing.assert_allclose(np.stack([shards[i] for i in range(len(shards))]), store.collect(), **TOL)
    assert len(shards.shard_rows) > 1
    cfg = sae.SAEConfig(d_in=D, d_sae=16, architecture="topk", k=3, init_samples=64, dead_tokens=64)
    params, history = sae.train(cfg, tmp_path / "acts", steps=4, batch_size=16, progress=False, log_every=1)
    assert len(history) == 4 and all(np.isfinite(h["loss"]) for h in history)
    with pytest.raises(ValueError, match=r"one field 'x' of rows \[d_in=9\]"):
        sae.train(cfg.replace(d_in=9), shards, steps=1, batch_size=16, progress=False)
