"""bf16 SAE training (``SAEConfig(precision=jaxzoo.Precision.bf16_params())``): bf16 weights and activations,
a float32 threshold, float32 losses, float32 master weights and Adam moments; trained close to float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxzoo
import sae
from sae import training as sae_train

BF16 = jaxzoo.Precision.bf16_params()


def toy(n=8192, d=32, seed=0):
    x, _ = sae.toy.superposition_data(n, d_in=d, n_features=2 * d, avg_active=3, seed=seed)
    return x


def config(arch, precision=jaxzoo.Precision()):
    extra = dict(matryoshka_widths=(16,)) if arch == "matryoshka" else {}
    return sae.SAEConfig(d_in=32, d_sae=64, architecture=arch, k=4, init_samples=2048, dead_tokens=4096,
                         precision=precision, **extra)


@pytest.mark.parametrize(
    "arch", [a if a in ("topk", "jumprelu") else pytest.param(a, marks=pytest.mark.slow) for a in sae.ARCHITECTURES]
)  # two in the default run, the other four (7-12 s each on 2 cores) in the slow pass
def test_bf16_training_is_close_to_float32(arch):
    """Same data, seed and steps: explained variance within 0.02 and L0 within 15% of the float32 run;
    the state holds bf16 weights, a float32 threshold and float32 master weights and moments."""
    x = toy()
    out = {}
    for name, precision in (("f32", jaxzoo.Precision()), ("bf16", BF16)):
        run = sae.run_config(config(arch, precision), steps=150, batch_size=256, learning_rate=3e-3)
        params, history = sae.train(run, x, progress=False, log_every=150)
        xb = jnp.asarray(x[:2048])
        x_hat, f = sae.apply(run.model, params, xb)
        ev = float(sae.ops.explained_variance(xb, x_hat))
        out[name] = (ev, float(jnp.mean(jnp.sum(f != 0, axis=-1))), params, history[-1])
    (ev32, l032, p32, _), (ev16, l016, p16, last) = out["f32"], out["bf16"]
    assert abs(ev16 - ev32) < 0.02, (ev32, ev16)
    assert abs(l016 - l032) <= 0.15 * l032 + 0.5, (l032, l016)
    assert last["loss"] == pytest.approx(last["loss"]) and np.isfinite(last["loss"])
    for k, v in p16.items():
        assert v.dtype == (jnp.float32 if k == "threshold" else jnp.bfloat16), (k, v.dtype)
    assert all(v.dtype == jnp.float32 for v in p32.values())


def test_bf16_state_keeps_float32_master_weights_and_moments():
    run = sae.run_config(config("jumprelu", BF16), steps=10, batch_size=64)
    assert run.optimizer.master_dtype == "float32"
    assert sae.default_optimizer(config("jumprelu")).master_dtype is None
    x = toy(512)
    plan = sae.init_state(run, sample=x)
    state = plan.state
    assert state.params["W_enc"].dtype == jnp.bfloat16 and state.params["threshold"].dtype == jnp.float32
    state, metrics = sae.make_train_step(run, donate=False)(state, x[:64], jax.random.key(0))
    assert metrics["loss"].dtype == jnp.float32 and metrics["explained_variance"].dtype == jnp.float32
    floats = [v for v in jax.tree.leaves(state.opt_state) if jnp.issubdtype(v.dtype, jnp.floating)]
    assert floats and all(v.dtype == jnp.float32 for v in floats)
    masters = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda s: isinstance(s, jaxzoo.optim.MasterState))
               if isinstance(s, jaxzoo.optim.MasterState)]
    np.testing.assert_allclose(np.asarray(state.params["W_enc"], np.float32), masters[0].master["W_enc"],
                               rtol=2**-7, atol=1e-6)


def test_bf16_unit_norm_decoder_and_resampling_act_on_the_master_weights():
    """post_update keeps the float32 master decoder rows unit-norm; resampling writes the new dead-latent
    weights into the master copy too (else the next step would restore the old ones)."""
    cfg = sae.SAEConfig(d_in=8, d_sae=16, architecture="gated", resample_every=2, init_samples=64,
                        dead_tokens=64, precision=BF16)
    x = toy(64, d=8)
    run = sae.RunConfig(model=cfg, optimizer=sae.default_optimizer(cfg), steps=4, batch_size=64)
    state = sae.init_state(run, sample=x).state
    state, _ = sae.make_train_step(run, donate=False)(state, x, jax.random.key(0))

    def master(state):
        return [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda s: isinstance(s, jaxzoo.optim.MasterState))
                if isinstance(s, jaxzoo.optim.MasterState)][0].master

    np.testing.assert_allclose(np.linalg.norm(np.asarray(master(state)["W_dec"]), axis=1), 1.0, rtol=1e-6)
    dead = np.arange(16) % 3 == 0
    state = state.replace(extra={**state.extra, "tokens_since_fired": jnp.where(dead, 64, 0).astype(jnp.int32)})
    new = sae_train.resample_dead(state, x, jax.random.key(1), cfg)
    assert new.params["W_dec"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(new.params["W_dec"], np.float32)[dead],
                               np.asarray(master(new)["W_dec"])[dead], atol=2**-7)
    np.testing.assert_array_equal(np.asarray(master(new)["W_dec"])[~dead], np.asarray(master(state)["W_dec"])[~dead])


def test_error_float16_precision():
    with pytest.raises(ValueError, match="float16 SAEs are not supported"):
        config("topk", jaxzoo.Precision(param_dtype="float16", compute_dtype="float16"))


def test_precision_round_trips_through_json():
    cfg = config("topk", BF16)
    assert sae.SAEConfig.from_json(cfg.to_json()) == cfg
