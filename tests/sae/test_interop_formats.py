"""Gemma Scope params.npz and SAELens folders (inference and training checkpoints) against transcriptions of
the reference code, and against sae-lens itself where it is installed.

Transcribed from jbloomAus/SAELens, commit 91ca16ccd0684e4dd6323cd4f23ded734339ec54 (v6.18.0):
  - sae_lens/saes/jumprelu_sae.py ``JumpReLUSAE.encode`` (ReLU(z) * 1[z > threshold], z = sae_in W_enc + b_enc)
    and sae_lens/saes/sae.py ``process_sae_in`` (sae_in = x - b_dec * apply_b_dec_to_input);
  - sae_lens/loading/pretrained_sae_loaders.py ``get_gemma_2_config_from_hf`` (``apply_b_dec_to_input: False``)
    and ``gemma_2_sae_huggingface_loader`` (``w_*`` keys renamed ``W_*``);
  - sae_lens/saes/batchtopk_sae.py ``BatchTopK``, ``update_topk_threshold`` and
    ``process_state_dict_for_saving_inference`` (threshold = ones * topk_threshold) after
    sae_lens/saes/topk_sae.py ``TopKTrainingSAE.process_state_dict_for_saving_inference`` / ``_fold_norm_topk``
    (W_enc *= n, b_enc *= n, W_dec /= n, n = ||W_dec,i||; ``rescale_acts_by_decoder_norm`` defaults to True
    in ``TopKTrainingSAEConfig``);
  - sae_lens/saes/jumprelu_sae.py ``JumpReLUTrainingSAE.process_state_dict_for_saving`` (threshold =
    exp(log_threshold)).
"""

import json

import jax
import numpy as np
import pytest

import sae

TOL = dict(rtol=1e-5, atol=1e-5)


# --- the transcriptions ---------------------------------------------------------------------------------


def sl_jumprelu_forward(w, x, apply_b_dec_to_input):
    """SAELens JumpReLUSAE.encode / decode (float64)."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    sae_in = x - w["b_dec"] * apply_b_dec_to_input
    hidden_pre = sae_in @ w["W_enc"] + w["b_enc"]
    f = np.maximum(hidden_pre, 0) * (hidden_pre > w["threshold"])
    return f @ w["W_dec"] + w["b_dec"], f


def sl_batchtopk_for_inference(w):
    """TopKTrainingSAE + BatchTopKTrainingSAE.process_state_dict_for_saving_inference (rescale=True)."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    n = np.linalg.norm(w["W_dec"], axis=-1)
    return {
        "W_enc": w["W_enc"] * n[None, :],
        "b_enc": w["b_enc"] * n,
        "W_dec": w["W_dec"] / n[:, None],
        "b_dec": w["b_dec"],
        "threshold": np.ones_like(w["b_enc"]) * float(w["topk_threshold"]),
    }


def sl_batchtopk_training_acts(w, x, k):
    """BatchTopKTrainingSAE.encode_with_hidden_pre with rescale_acts_by_decoder_norm: BatchTopK(z * n)."""
    w = {k_: np.asarray(v, np.float64) for k_, v in w.items()}
    hidden_pre = ((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]) * np.linalg.norm(w["W_dec"], axis=-1)
    acts = np.maximum(hidden_pre, 0).ravel()
    keep = np.argsort(-acts, kind="stable")[: int(k * x.shape[0])]
    out = np.zeros_like(acts)
    out[keep] = acts[keep]
    return out.reshape(hidden_pre.shape)


def gemma_scale_weights(d=16, m=48, seed=0):
    """Random weights at Gemma Scope's scale: a large b_dec (residual stream mean), small thresholds."""
    rng = np.random.default_rng(seed)
    W_dec = rng.normal(size=(m, d)).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    return {
        "W_enc": (W_dec.T * 0.5 + 0.05 * rng.normal(size=(d, m))).astype(np.float32),
        "b_enc": (0.1 * rng.normal(size=m)).astype(np.float32),
        "W_dec": W_dec,
        "b_dec": (3.0 * rng.normal(size=d)).astype(np.float32),
        "threshold": rng.uniform(0.05, 0.5, size=m).astype(np.float32),
    }


X = np.random.default_rng(7).normal(size=(32, 16)).astype(np.float32) * 2.0 + 1.0


# --- Gemma Scope ----------------------------------------------------------------------------------------


def test_gemmascope_load_does_not_centre_the_input(tmp_path):
    w = gemma_scale_weights()
    np.savez(tmp_path / "params.npz", **w)
    cfg, params = sae.load_gemmascope(tmp_path)
    assert cfg.apply_b_dec_to_input is False and cfg.normalize_activations is False
    x_hat, f = sae.apply(cfg, params, X)
    want_x_hat, want_f = sl_jumprelu_forward(w, X, apply_b_dec_to_input=False)
    np.testing.assert_allclose(f, want_f, **TOL)
    np.testing.assert_allclose(x_hat, want_x_hat, **TOL)
    # centring the input (the old reading) is visibly wrong at this scale
    wrong_x_hat, _ = sl_jumprelu_forward(w, X, apply_b_dec_to_input=True)
    assert np.abs(wrong_x_hat - want_x_hat).max() > 0.1


def test_gemmascope_lowercase_keys_and_scaling_factor(tmp_path):
    w = gemma_scale_weights(seed=1)
    renamed = {("w_" + k[2:] if k.startswith("W_") else k): v for k, v in w.items()}
    np.savez(tmp_path / "a.npz", **renamed, scaling_factor=np.ones(48, np.float32))
    cfg, params = sae.load_gemmascope(tmp_path / "a.npz")
    np.testing.assert_allclose(sae.apply(cfg, params, X)[0], sl_jumprelu_forward(w, X, False)[0], **TOL)
    np.savez(tmp_path / "b.npz", **w, scaling_factor=np.full(48, 2.0, np.float32))
    with pytest.raises(ValueError, match="scaling_factor other than 1"):
        sae.load_gemmascope(tmp_path / "b.npz")


@pytest.mark.parametrize("arch", ["jumprelu", "batchtopk"])
def test_gemmascope_save_folds_the_centring_into_b_enc(tmp_path, arch):
    """An SAE that encodes x - b_dec, written as params.npz, gives the same outputs under Gemma Scope's
    (uncentred) forward pass, and loads back equal."""
    cfg = sae.SAEConfig(d_in=16, d_sae=48, architecture=arch, k=3, normalize_activations=False)
    assert cfg.apply_b_dec_to_input
    w = gemma_scale_weights(seed=2)
    if cfg.rescale_by_decoder_norm:  # a free decoder: the save folds the norms too
        w["W_dec"] = w["W_dec"] * np.random.default_rng(0).uniform(0.05, 0.3, size=(48, 1)).astype(np.float32)
    x_hat, f = sae.apply(cfg, w, X)
    path = sae.save_gemmascope(w, cfg, tmp_path)
    with np.load(path) as data:
        saved = {k: data[k] for k in data.files}
    want_x_hat, _ = sl_jumprelu_forward(saved, X, apply_b_dec_to_input=False)
    np.testing.assert_allclose(x_hat, want_x_hat, **TOL)
    cfg2, params2 = sae.load_gemmascope(path)
    np.testing.assert_allclose(sae.apply(cfg2, params2, X)[0], x_hat, **TOL)


# --- SAELens training checkpoints -----------------------------------------------------------------------


def write_saelens(path, cfg_json, weights):
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg_json))
    return path


def batchtopk_checkpoint(k=4, d=16, m=48, seed=3, matryoshka_widths=None):
    """A SAELens BatchTopK training checkpoint: free decoder (norms ~0.1, as decoder_init_norm) and the
    topk_threshold the EMA would reach on X (the smallest kept rescaled activation)."""
    rng = np.random.default_rng(seed)
    W_dec = rng.normal(size=(m, d)) * rng.uniform(0.03, 0.3, size=(m, 1)) / np.sqrt(d)
    w = {
        "W_enc": (W_dec.T * 10 + 0.1 * rng.normal(size=(d, m))).astype(np.float32),
        "b_enc": (0.05 * rng.normal(size=m)).astype(np.float32),
        "W_dec": W_dec.astype(np.float32),
        "b_dec": (0.5 * rng.normal(size=d)).astype(np.float32),
    }
    acts = sl_batchtopk_training_acts(w, X, k)
    kept_min = acts[acts > 0].min()
    w64 = {k_: np.asarray(v, np.float64) for k_, v in w.items()}
    z = ((X - w64["b_dec"]) @ w64["W_enc"] + w64["b_enc"]) * np.linalg.norm(w64["W_dec"], axis=-1)
    below = z[z < kept_min].max()
    # the EMA lands near the smallest kept activation; midway to the next one keeps float32 off the boundary
    w["topk_threshold"] = np.asarray((kept_min + below) / 2, np.float64)
    arch = "batchtopk" if matryoshka_widths is None else "matryoshka_batchtopk"
    cfg_json = {
        "architecture": arch,
        "d_in": d,
        "d_sae": m,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "decoder_init_norm": 0.1,
        "k": float(k),
        "use_sparse_activations": False,
        "aux_loss_coefficient": 1.0,
        "rescale_acts_by_decoder_norm": True,
        "topk_threshold_lr": 0.01,
        "metadata": {
            "model_name": "gpt2",
            "hook_name": "blocks.3.hook_resid_post",
            "sae_lens_version": "6.18.0",
        },
    }
    if matryoshka_widths is not None:
        cfg_json["matryoshka_widths"] = list(matryoshka_widths)
    return cfg_json, w


@pytest.mark.parametrize("widths", [None, [12, 24, 48]])
def test_saelens_batchtopk_training_checkpoint_loads_as_saelens_infers(tmp_path, widths):
    cfg_json, w = batchtopk_checkpoint(matryoshka_widths=widths)
    cfg, params = sae.load_saelens(write_saelens(tmp_path / "ckpt", cfg_json, w))
    assert cfg.architecture == ("batchtopk" if widths is None else "matryoshka") and cfg.k == 4
    if widths is not None:
        assert cfg.levels == (12, 24, 48)
    x_hat, f = sae.apply(cfg, params, X)
    want_x_hat, want_f = sl_jumprelu_forward(sl_batchtopk_for_inference(w), X, apply_b_dec_to_input=True)
    np.testing.assert_allclose(f, want_f, **TOL)
    np.testing.assert_allclose(x_hat, want_x_hat, **TOL)
    # L0 at inference is the training L0 (k = 4 per token on the batch the threshold came from), not the
    # several-times-larger count a zero threshold (or an unfolded decoder norm) gives
    l0 = np.mean(np.sum(np.asarray(f) != 0, axis=-1))
    assert abs(l0 - 4) <= 0.1, l0
    # the inference folder SAELens would write loads the same, and ours saves it back equal
    sae.save_saelens(params, cfg, tmp_path / "ours")
    cfg2, params2 = sae.load_saelens(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "cfg.json").read_text())["architecture"] == "jumprelu"
    np.testing.assert_allclose(sae.apply(cfg2, params2, X)[0], x_hat, **TOL)


def test_saelens_topk_rescaled_checkpoint_and_k_checks(tmp_path):
    cfg_json, w = batchtopk_checkpoint()
    del w["topk_threshold"]
    cfg_json = {**cfg_json, "architecture": "topk", "k": 4}
    cfg, params = sae.load_saelens(write_saelens(tmp_path / "topk", cfg_json, w))
    w64 = {k: np.asarray(v, np.float64) for k, v in w.items()}
    hidden_pre = ((X - w64["b_dec"]) @ w64["W_enc"] + w64["b_enc"]) * np.linalg.norm(w64["W_dec"], axis=-1)
    want_f = np.zeros_like(hidden_pre)
    for b in range(len(X)):
        top = np.argsort(-hidden_pre[b])[:4]
        want_f[b, top] = np.maximum(hidden_pre[b, top], 0)
    want_x_hat = (want_f / np.linalg.norm(w64["W_dec"], axis=-1)) @ w64["W_dec"] + w64["b_dec"]
    x_hat, f = sae.apply(cfg, params, X)
    np.testing.assert_allclose(f, want_f, **TOL)
    np.testing.assert_allclose(x_hat, want_x_hat, **TOL)
    # without the rescaling the top-k runs on z itself (and our config says so)
    cfg2, params2 = sae.load_saelens(
        write_saelens(tmp_path / "plain", {**cfg_json, "rescale_acts_by_decoder_norm": False}, w)
    )
    assert cfg2.unit_norm_decoder is True and not cfg2.rescale_by_decoder_norm
    z = (X - w64["b_dec"]) @ w64["W_enc"] + w64["b_enc"]
    top = np.argsort(-z, axis=1)[:, :4]
    want = np.zeros_like(z)
    np.put_along_axis(want, top, np.maximum(np.take_along_axis(z, top, 1), 0), 1)
    np.testing.assert_allclose(sae.apply(cfg2, params2, X)[1], want, **TOL)
    with pytest.raises(ValueError, match="k=2.5 is not an integer"):
        sae.load_saelens(write_saelens(tmp_path / "frac", {**cfg_json, "k": 2.5}, w))


def test_saelens_batchtopk_without_threshold_raises(tmp_path):
    cfg_json, w = batchtopk_checkpoint()
    del w["topk_threshold"]
    with pytest.raises(ValueError, match="needs 'topk_threshold'"):
        sae.load_saelens(write_saelens(tmp_path, cfg_json, w))


def test_saelens_jumprelu_log_threshold(tmp_path):
    w = gemma_scale_weights(seed=4)
    log_w = {**{k: v for k, v in w.items() if k != "threshold"}, "log_threshold": np.log(w["threshold"])}
    cfg_json = {"architecture": "jumprelu", "d_in": 16, "d_sae": 48, "apply_b_dec_to_input": True}
    cfg, params = sae.load_saelens(write_saelens(tmp_path, cfg_json, log_w))
    np.testing.assert_allclose(params["threshold"], w["threshold"], rtol=1e-6)
    np.testing.assert_allclose(sae.apply(cfg, params, X)[0], sl_jumprelu_forward(w, X, True)[0], **TOL)


# --- cfg.json round trip without loss -------------------------------------------------------------------


def inference_cfg(arch, **extra):
    return {
        "d_in": 16,
        "d_sae": 48,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": "gemma-2-2b",
            "hook_name": "blocks.5.hook_resid_post",
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": 1024,
            "dataset_path": "monology/pile-uncopyrighted",
            "neuronpedia_id": "gemma-2-2b/5-res-16k",
            "sae_lens_training_version": "6.18.0",
        },
        "architecture": arch,
        **extra,
    }


@pytest.mark.parametrize("arch", ["standard", "gated", "topk", "jumprelu"])
def test_saelens_cfg_json_and_weights_round_trip_without_loss(tmp_path, arch):
    from safetensors.numpy import load_file

    cfg = sae.SAEConfig(
        d_in=16, d_sae=48, architecture=sae.interop._FROM_SAELENS[arch], k=5, normalize_activations=False
    )
    params = {k: np.asarray(v) for k, v in sae.init_params(cfg, jax.random.key(0))[0].items()}
    rng = np.random.default_rng(5)
    params = {k: (v + 0.1 * rng.normal(size=v.shape)).astype(np.float32) for k, v in params.items()}
    if arch == "topk":  # an inference folder: unit rows (a rescaled one is saved folded)
        params["W_dec"] /= np.linalg.norm(params["W_dec"], axis=1, keepdims=True)
    if "threshold" in params:
        params["threshold"] = np.abs(params["threshold"]) + 0.05
    cfg_json = inference_cfg(
        arch, **({"k": 5, "rescale_acts_by_decoder_norm": False} if arch == "topk" else {})
    )
    write_saelens(tmp_path / "theirs", cfg_json, params)
    cfg2, params2, raw = sae.load_saelens(tmp_path / "theirs", return_cfg_json=True)
    assert raw == cfg_json
    sae.save_saelens(params2, cfg2, tmp_path / "ours", cfg_json=raw)
    assert json.loads((tmp_path / "ours" / "cfg.json").read_text()) == cfg_json
    saved = load_file(str(tmp_path / "ours" / "sae_weights.safetensors"))
    assert sorted(saved) == sorted(params)
    for k in params:
        np.testing.assert_allclose(saved[k], params[k], rtol=1e-6, atol=1e-7)


# --- against sae-lens itself ----------------------------------------------------------------------------


def test_batchtopk_checkpoint_against_sae_lens(tmp_path):
    """Where sae-lens is installed: its BatchTopK training SAE, saved as a training checkpoint, loads in ours
    with the outputs of its own inference model (save_inference_model -> SAE.load_from_disk)."""
    pytest.importorskip("sae_lens")
    torch = pytest.importorskip("torch")
    from sae_lens import SAE as SLSAE
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    theirs = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=16, d_sae=48, k=4))
    with torch.no_grad():
        theirs.b_dec.normal_()
        theirs.update_topk_threshold(theirs.encode(torch.from_numpy(X)))
    theirs.save_model(str(tmp_path / "train"))
    theirs.save_inference_model(str(tmp_path / "infer"))
    ref = SLSAE.load_from_disk(str(tmp_path / "infer"))
    with torch.no_grad():
        f_ref = ref.encode(torch.from_numpy(X)).numpy()
        x_hat_ref = ref.decode(torch.from_numpy(f_ref)).numpy()
    for folder in ("train", "infer"):
        cfg, params = sae.load_saelens(tmp_path / folder)
        x_hat, f = sae.apply(cfg, params, X)
        np.testing.assert_allclose(f, f_ref, **TOL)
        np.testing.assert_allclose(x_hat, x_hat_ref, **TOL)
