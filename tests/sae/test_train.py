"""The SAE module, the training step (projection, folding, BatchTopK threshold, NaN skipping, sharding),
the toy recovery, and the documented errors."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxzoo
import sae
from sae import training as sae_train

TOL = dict(rtol=1e-5, atol=1e-5)


def toy(n=2048, d=16, seed=0):
    x, _ = sae.toy.superposition_data(n, d_in=d, n_features=2 * d, avg_active=3, seed=seed)
    return x


def random_params(cfg, seed=0):
    params, _ = sae.init_params(cfg, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(v + 0.1 * rng.normal(size=v.shape).astype(np.float32)) for k, v in params.items()}


@pytest.mark.parametrize("arch", sae.ARCHITECTURES)
def test_module_forward_against_numpy(arch):
    cfg = sae.SAEConfig(d_in=8, d_sae=16, architecture=arch, k=3)
    p = {k: np.asarray(v, np.float64) for k, v in random_params(cfg).items()}
    if "threshold" in p:
        p["threshold"] = np.abs(p["threshold"]) + 0.05
    x = np.random.default_rng(1).normal(size=(2, 3, 8)).astype(np.float32)  # extra leading axes
    x_hat, f = jax.jit(lambda p, x: sae.apply(cfg, p, x))(
        {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}, x
    )
    want_f = np.zeros((2, 3, 16))
    for a in range(2):
        for b in range(3):
            xc = x[a, b] - p["b_dec"]
            if arch == "gated":
                gate = xc @ p["W_enc"] + p["b_gate"]
                mag = xc @ (p["W_enc"] * np.exp(p["r_mag"])) + p["b_mag"]
                want_f[a, b] = (gate > 0) * np.maximum(mag, 0)
                continue
            z = xc @ p["W_enc"] + p["b_enc"]
            if cfg.rescale_by_decoder_norm:  # SAELens rescale_acts_by_decoder_norm
                z = z * np.linalg.norm(p["W_dec"], axis=1)
            if arch == "relu":
                want_f[a, b] = np.maximum(z, 0)
            elif arch == "topk":
                for i in np.argsort(-z)[:3]:
                    want_f[a, b, i] = max(z[i], 0)
            else:  # jumprelu, and batchtopk / matryoshka at inference: z * 1[z > theta]
                want_f[a, b] = np.where(z > p["threshold"], z, 0)
    np.testing.assert_allclose(f, want_f, **TOL)
    norms = np.linalg.norm(p["W_dec"], axis=1) if cfg.rescale_by_decoder_norm else 1.0
    np.testing.assert_allclose(x_hat, (want_f / norms) @ p["W_dec"] + p["b_dec"], **TOL)


def test_parameters_have_logical_axes_and_shapes():
    cfg = sae.SAEConfig(d_in=8, d_sae=16, architecture="gated")
    boxed = sae.SAE(cfg).init(jax.random.key(0), jnp.zeros((1, 8)))["params"]
    names = {k: v.names for k, v in boxed.items()}
    assert names == {
        "W_enc": ("embed", "latent"),
        "W_dec": ("latent", "embed"),
        "b_dec": ("embed",),
        "b_gate": ("latent",),
        "r_mag": ("latent",),
        "b_mag": ("latent",),
    }
    params = jax.tree.map(np.asarray, sae.init_params(cfg, jax.random.key(0))[0])
    np.testing.assert_allclose(params["W_enc"], params["W_dec"].T)
    np.testing.assert_allclose(np.linalg.norm(params["W_dec"], axis=1), 1.0, rtol=1e-6)
    relu = sae.init_params(sae.SAEConfig(d_in=8, d_sae=16, architecture="relu"), jax.random.key(0))[0]
    np.testing.assert_allclose(np.linalg.norm(relu["W_dec"], axis=1), 0.1, rtol=1e-5)


@pytest.mark.parametrize("arch", sae.ARCHITECTURES)
def test_folding_the_scale_leaves_outputs_unchanged(arch):
    """SAE(s*x)/s with the unfolded weights == SAE(x) with the folded ones; latents identical (divided by s
    where the latents are coefficients on unit decoder directions: the free-decoder TopK family)."""
    cfg = sae.SAEConfig(d_in=8, d_sae=16, architecture=arch, k=3)
    p = random_params(cfg, seed=2)
    if "threshold" in p:
        p["threshold"] = jnp.abs(p["threshold"]) + 0.05
    s = 3.7
    x = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
    x_hat_s, f_s = sae.apply(cfg, p, s * x)
    x_hat, f = sae.apply(cfg, sae.fold_scale(p, s, cfg), x)
    np.testing.assert_allclose(f, f_s / s if cfg.rescale_by_decoder_norm else f_s, **TOL)
    np.testing.assert_allclose(x_hat, x_hat_s / s, **TOL)


# one small config shared by the training tests, so its step compiles once (sae.train caches it)
SMALL = sae.SAEConfig.tiny()
SMALL_RUN = sae.RunConfig(model=SMALL, steps=6, batch_size=128)


def test_decoder_stays_unit_norm_and_moves_under_projected_update():
    """The unit-norm variant of TopK (OpenAI's; ``unit_norm_decoder=True``)."""
    x = toy(512)
    run = SMALL_RUN.replace(model=SMALL.replace(unit_norm_decoder=True))
    step = sae_train._cached_step(run)
    state = sae.init_state(run, sample=x[:256]).state
    w0 = np.asarray(state.params["W_dec"])
    for i in range(4):
        state, _ = step(state, x[i * 128 : (i + 1) * 128], jax.random.key(0))
    w = np.asarray(state.params["W_dec"])
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-6)
    assert np.abs(w - w0).max() > 1e-3
    # the projected gradient is orthogonal to each row
    grads = {"W_dec": jnp.asarray(np.random.default_rng(0).normal(size=w.shape), jnp.float32)}
    projected, _ = sae_train.project_decoder_gradient().update(grads, None, {"W_dec": jnp.asarray(w)})
    np.testing.assert_allclose(np.sum(np.asarray(projected["W_dec"]) * w, axis=1), 0.0, atol=1e-5)


def test_batchtopk_inference_threshold_is_ema_of_min_kept_activation():
    cfg = sae.SAEConfig(d_in=8, d_sae=16, architecture="batchtopk", k=2, batchtopk_threshold_decay=0.9)
    p = random_params(cfg)
    p.pop("threshold")
    loss_fn = jax.jit(sae_train.make_loss_fn(cfg))
    extra = sae_train.initial_extra(cfg, scale=1.0)
    rng = np.random.default_rng(4)
    want = 0.0
    for t in range(4):
        x = rng.normal(size=(6, 8)).astype(np.float32)
        _, (_, extra) = loss_fn(p, extra, x, jax.random.key(0))
        z = (x - np.asarray(p["b_dec"])) @ np.asarray(p["W_enc"]) + np.asarray(p["b_enc"])
        z = z * np.linalg.norm(np.asarray(p["W_dec"]), axis=1)  # rescale_acts_by_decoder_norm (default)
        kept = np.sort(np.maximum(z, 0).ravel())[::-1][: 2 * 6]
        m = kept[kept > 0].min()
        want = m if t == 0 else 0.9 * want + 0.1 * m
        np.testing.assert_allclose(extra["threshold"], want, rtol=1e-5)
    state = jaxzoo.TrainState(step=jnp.asarray(4), params=p, opt_state=None, extra=extra)
    final = sae_train.final_params(state, cfg.replace(normalize_activations=False))
    x = rng.normal(size=(5, 8)).astype(np.float32)
    _, f = sae.apply(cfg, final, x)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(final["W_dec"]), axis=1), 1.0, rtol=1e-5)
    z = (x - np.asarray(p["b_dec"])) @ np.asarray(p["W_enc"]) + np.asarray(p["b_enc"])
    z = z * np.linalg.norm(np.asarray(p["W_dec"]), axis=1)
    np.testing.assert_allclose(f, np.where(z > want, z, 0.0), **TOL)


def test_nan_rows_are_dropped_counted_and_warned_once():
    """1 bad row in a batch no longer skips the batch: the row is dropped (replaced by the batch's good rows),
    counted, and training proceeds; warned once."""
    cfg = SMALL
    x = toy(128 * 6)
    batches = [x[i * 128 : (i + 1) * 128].copy() for i in range(6)]
    batches[2][3, 5] = np.nan
    batches[4][0, 0] = np.inf
    with pytest.warns(RuntimeWarning, match="NaN or inf") as record:
        params, history = sae.train(cfg, iter(batches), steps=6, batch_size=128, progress=False, log_every=1)
    assert sum("NaN or inf" in str(w.message) for w in record) == 1
    assert history[-1]["skipped"] == 0 and history[-1]["bad_rows"] == 2
    assert all(np.isfinite(np.asarray(v)).all() for v in params.values())
    assert all(np.isfinite(h["loss"]) for h in history)


def test_drop_bad_rows_matches_the_good_rows():
    """The loss of a batch with bad rows equals the loss of its good rows (copies keep the batch shape; on a
    batch whose good rows tile it evenly the statistics are exactly those of the good rows)."""
    rng = np.random.default_rng(0)
    good = rng.normal(size=(4, 8)).astype(np.float32)
    batch = np.concatenate([good, good]).copy()
    batch[[4, 5, 6, 7]] = np.nan
    x, n_bad = sae_train.drop_bad_rows(jnp.asarray(batch))
    assert int(n_bad) == 4
    np.testing.assert_array_equal(np.asarray(x), np.concatenate([good, good]))
    x, n_bad = sae_train.drop_bad_rows(jnp.full((3, 8), jnp.nan))
    assert int(n_bad) == 3 and np.all(np.asarray(x) == 0)


def test_too_many_bad_rows_raise_and_all_bad_batch_is_skipped():
    x = toy(128 * 6)
    batches = [x[i * 128 : (i + 1) * 128].copy() for i in range(6)]
    for b in batches:
        b[:2, 0] = np.nan  # 1.6% of the rows
    with pytest.raises(ValueError, match="more than max_bad_fraction=0.01"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sae.train(
            SMALL.replace(max_bad_fraction=0.01), iter(batches), steps=6, batch_size=128, progress=False
        )
    batches = [x[i * 128 : (i + 1) * 128].copy() for i in range(6)]
    batches[3][:] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        run = sae.RunConfig(model=SMALL.replace(max_bad_fraction=1.0), steps=6, batch_size=128)
        params, history = sae.train(run, iter(batches), progress=False, log_every=1)
    assert history[-1]["skipped"] == 1 and history[-1]["bad_rows"] == 128
    assert all(np.isfinite(np.asarray(v)).all() for v in params.values())


def test_sharded_step_equals_single_device_with_auxk():
    """data=4, model=2 against one device, 3 steps of the TopK step, with half the latents marked dead so
    the AuxK branch runs too."""
    x = toy(512, seed=5)
    step = sae_train._cached_step(SMALL_RUN)
    single = sae.init_state(SMALL_RUN, sample=x[:256]).state
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    plan = sae.init_state(SMALL_RUN, sample=x[:256], mesh=mesh)
    sharded = plan.state
    since = np.where(np.arange(SMALL.d_sae) % 2 == 0, SMALL.dead_tokens, 0).astype(np.int32)
    single = single.replace(extra={**single.extra, "tokens_since_fired": jnp.asarray(since)})
    sharded_since = jax.device_put(since, sharded.extra["tokens_since_fired"].sharding)
    sharded = sharded.replace(extra={**sharded.extra, "tokens_since_fired": sharded_since})
    assert sharded.params["W_enc"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    sharded_step = sae.make_train_step(SMALL_RUN, mesh=mesh, state_sharding=plan.shardings)
    auxk = []
    for i in range(3):
        batch = x[i * 128 : (i + 1) * 128]
        single, m1 = step(single, batch, jax.random.key(1))
        sharded, m2 = sharded_step(sharded, jaxzoo.shard_batch(batch, mesh), jax.random.key(1))
        np.testing.assert_allclose(m1["loss"], m2["loss"], **TOL)
        auxk.append(float(m1["auxk"]))
    assert sharded.params["W_dec"].sharding.spec == jax.sharding.PartitionSpec("model", None)
    for k in single.params:
        np.testing.assert_allclose(single.params[k], sharded.params[k], err_msg=k, **TOL)
    np.testing.assert_array_equal(single.extra["tokens_since_fired"], sharded.extra["tokens_since_fired"])
    assert auxk[0] > 0


def test_toy_recovery_topk():
    x, features = sae.toy.superposition_data(30_000, d_in=32, n_features=48, avg_active=3, seed=0)
    cfg = sae.SAEConfig(d_in=32, d_sae=96, architecture="topk", k=4, init_samples=4096)
    params, history = sae.train(cfg, x, steps=250, batch_size=512, learning_rate=3e-3, progress=False)
    rec = sae.toy.recovery(params, features)
    assert rec["mmcs"] >= 0.9, rec
    assert history[-1]["explained_variance"] > 0.8


def test_train_resumes_from_checkpoint(tmp_path):
    """A run interrupted at step 3 (its state checkpointed by jaxzoo.fit with the run config) is resumed by
    ``sae.train`` and ends where an uninterrupted run ends, with the whole history."""
    x = toy(1024)
    full, _ = sae.train(SMALL_RUN, x, progress=False)
    sample, batches = sae_train._init_sample(x, SMALL, SMALL_RUN.batch_size, SMALL_RUN.seed)
    plan = sae.init_state(SMALL_RUN, sample=sample)
    jaxzoo.fit(
        plan.state,
        sae_train._cached_step(SMALL_RUN),
        batches,
        num_steps=3,
        rng=jax.random.key(0),
        workdir=tmp_path,
        config=SMALL_RUN,
        log_every=1,
        progress=False,
    )
    resumed, history = sae.train(SMALL_RUN, x, progress=False, workdir=tmp_path, log_every=1)
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    for k in full:
        np.testing.assert_allclose(full[k], resumed[k], err_msg=k, **TOL)


# --- documented errors ----------------------------------------------------------------------------------


def test_error_unknown_architecture():
    with pytest.raises(ValueError, match="unknown SAE architecture 'vanilla'"):
        sae.SAEConfig(architecture="vanilla")


@pytest.mark.parametrize("k", [0, 65])
def test_error_k_out_of_range(k):
    with pytest.raises(ValueError, match="k must be between 1 and d_sae=64"):
        sae.SAEConfig(d_in=8, d_sae=64, architecture="topk", k=k)


def test_error_activations_wrong_width():
    cfg = sae.SAEConfig(d_in=8, d_sae=64)
    with pytest.raises(ValueError, match=r"activations must have shape \[N, d_in=8\]; got \(10, 7\)"):
        sae.train(cfg, np.zeros((10, 7), np.float32), steps=1, batch_size=2)
    with pytest.raises(ValueError, match=r"activation batches must have shape \[batch, d_in=8\]"):
        sae.train(cfg, iter([np.zeros((4, 9), np.float32)]), steps=1, batch_size=4)
    params = sae.init_params(cfg, jax.random.key(0))[0]
    with pytest.raises(ValueError, match=r"shape \[..., d_in=8\]; got shape \(3, 5\)"):
        sae.apply(cfg, params, np.zeros((3, 5), np.float32))


def test_error_too_few_activations_for_a_batch():
    with pytest.raises(ValueError, match="need at least batch_size=64"):
        sae.train(sae.SAEConfig(d_in=8, d_sae=64), np.ones((10, 8), np.float32), steps=1, batch_size=64)


def test_no_warning_on_clean_data():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        params, history = sae.train(SMALL, toy(1024), steps=6, batch_size=128, progress=False)
    assert history[-1]["skipped"] == 0


def test_resampling_reinitialises_only_dead_latents():
    cfg = sae.SAEConfig(
        d_in=8, d_sae=16, architecture="relu", resample_every=2, init_samples=64, dead_tokens=64
    )
    x = toy(64, d=8)
    run = sae.RunConfig(model=cfg, steps=4, batch_size=64)
    state = sae.init_state(run, sample=x).state
    state, _ = sae.make_train_step(run, donate=False)(state, x, jax.random.key(0))  # Adam moments != 0
    dead = np.arange(16) % 3 == 0
    state = state.replace(
        extra={**state.extra, "tokens_since_fired": jnp.where(dead, 64, 0).astype(jnp.int32)}
    )
    new = sae_train.resample_dead(state, x, jax.random.key(1), cfg)
    p, q = (
        {k: np.asarray(v) for k, v in state.params.items()},
        {k: np.asarray(v) for k, v in new.params.items()},
    )
    xs = x * float(state.extra["scale"])
    units = xs / np.linalg.norm(xs, axis=1, keepdims=True)
    alive_norm = np.linalg.norm(p["W_enc"], axis=0)[~dead].mean()
    for i in range(16):
        if dead[i]:
            assert np.abs(units @ q["W_dec"][i] - 1).min() < 1e-5  # a normalised input
            np.testing.assert_allclose(q["W_enc"][:, i], 0.2 * alive_norm * q["W_dec"][i], **TOL)
            assert q["b_enc"][i] == 0
        else:
            np.testing.assert_array_equal(q["W_dec"][i], p["W_dec"][i])
            np.testing.assert_array_equal(q["W_enc"][:, i], p["W_enc"][:, i])
    adam = [
        s for s in jax.tree.leaves(new.opt_state, is_leaf=lambda s: hasattr(s, "mu")) if hasattr(s, "mu")
    ][0]
    old = [
        s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda s: hasattr(s, "mu")) if hasattr(s, "mu")
    ][0]
    assert np.all(np.asarray(adam.mu["W_dec"])[dead] == 0) and np.all(
        np.asarray(adam.nu["W_enc"])[:, dead] == 0
    )
    np.testing.assert_array_equal(np.asarray(adam.mu["W_dec"])[~dead], np.asarray(old.mu["W_dec"])[~dead])
    assert np.all(np.asarray(new.extra["tokens_since_fired"]) == 0)


def test_error_resampling_for_topk():
    with pytest.raises(ValueError, match="resample_every is for relu and gated"):
        sae.SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2, resample_every=10)


@pytest.mark.parametrize("arch", ["relu", "gated", "topk", "batchtopk", "matryoshka", "jumprelu"])
def test_flops_per_example_against_xla(arch):
    """The analytic training FLOPs per activation are within 20% of XLA's count for the loss + gradient (at a
    width where the products dominate XLA's count of the top-k selections, which it counts as FLOPs too)."""
    import jaxzoo.flops

    cfg = sae.SAEConfig(
        d_in=512,
        d_sae=512,
        architecture=arch,
        k=8,
        matryoshka_widths=(128,),
        normalize_activations=False,
        aux_coefficient=0.0,  # AuxK runs only while latents are dead (not counted; XLA counts both branches)
    )
    run = sae.run_config(cfg, steps=2, batch_size=256)
    plan = sae.init_state(run)
    loss_fn = sae.make_loss_fn(cfg)
    grad = jax.grad(lambda p, e, x: loss_fn(p, e, x, None)[0])
    x = jnp.ones((256, 512), jnp.float32)
    counted = jaxzoo.flops.xla_flops(grad, plan.state.params, plan.state.extra, x) / 256
    assert counted == pytest.approx(sae.flops_per_example(run), rel=0.2)
    with pytest.raises(ValueError, match="expects a sae.SAEConfig or sae.RunConfig"):
        sae.flops_per_example("topk")


def test_threshold_learns_at_its_own_rate():
    """threshold_lr_scale multiplies theta's optimiser update (default sqrt(d_in) on normalised activations)."""
    cfg = sae.SAEConfig.tiny("jumprelu")
    assert cfg.threshold_lr_multiplier == 4.0  # sqrt(16)
    assert cfg.replace(normalize_activations=False).threshold_lr_multiplier == 1.0
    params = {k: v for k, v in sae.init_params(cfg, jax.random.key(0))[0].items()}
    grads = jax.tree.map(lambda v: jnp.full_like(v, 0.3), params)
    updates = {}
    for scale in (1.0, 7.0):
        run = sae.RunConfig.tiny("jumprelu").replace(model=cfg.replace(threshold_lr_scale=scale))
        tx = sae.make_optimizer(run)
        updates[scale] = tx.update(grads, tx.init(params), params)[0]
    np.testing.assert_allclose(updates[7.0]["threshold"], 7.0 * updates[1.0]["threshold"], rtol=1e-6)
    np.testing.assert_allclose(updates[7.0]["W_enc"], updates[1.0]["W_enc"], rtol=1e-6)
    with pytest.raises(ValueError, match="threshold_lr_scale must be a positive number"):
        cfg.replace(threshold_lr_scale=0.0)


@pytest.mark.slow  # ~10 s alone, minutes on a loaded machine
def test_jumprelu_l0_decreases_with_the_l0_coefficient():
    """With the default bandwidth and threshold learning rate, a larger L0 coefficient gives a smaller L0
    (3 seeds each, tiny toy); before the threshold had its own rate it did not move (issue 16)."""
    x, _ = sae.toy.superposition_data(6144, d_in=16, n_features=32, avg_active=3, seed=0)
    train_x, held = x[:4096], x[4096:]
    l0 = {}
    for lam in (0.3, 3.0):
        model = sae.SAEConfig.tiny("jumprelu").replace(l0_coefficient=lam)
        run = sae.run_config(model, steps=80, batch_size=256, learning_rate=3e-3)
        step = sae.make_train_step(run, donate=False)
        l0[lam] = []
        for seed in range(3):
            state = sae.init_state(run.replace(seed=seed), sample=train_x[:256]).state
            for i in range(run.steps):
                state, _ = step(state, train_x[(i % 16) * 256 : (i % 16 + 1) * 256], jax.random.key(seed))
            l0[lam].append(sae.evaluate(model, sae.final_params(state, model), held)["l0"])
    assert max(l0[3.0]) < min(l0[0.3]), l0
