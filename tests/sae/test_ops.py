"""sae.ops and sae.losses against slow numpy written here (loops over tokens and latents)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sae import SAEConfig, losses, ops

TOL = dict(rtol=1e-5, atol=1e-5)


def rand_params(rng, d, m, arch="topk"):
    p = {
        "W_enc": rng.normal(size=(d, m)) / np.sqrt(d),
        "b_enc": 0.1 * rng.normal(size=m),
        "W_dec": rng.normal(size=(m, d)) / np.sqrt(m),
        "b_dec": 0.1 * rng.normal(size=d),
    }
    if arch == "gated":
        p.update(
            b_gate=0.1 * rng.normal(size=m), r_mag=0.1 * rng.normal(size=m), b_mag=0.1 * rng.normal(size=m)
        )
        del p["b_enc"]
    if arch == "jumprelu":
        p["threshold"] = np.abs(0.3 * rng.normal(size=m))
    return {k: v.astype(np.float32) for k, v in p.items()}


def np_pre(p, x):
    xc = x.astype(np.float64) - p["b_dec"]
    return xc @ p["W_enc"].astype(np.float64) + p["b_enc"]


def np_topk(z, k):
    f = np.zeros_like(z)
    for b in range(z.shape[0]):
        order = sorted(range(z.shape[1]), key=lambda i: -z[b, i])[:k]
        for i in order:
            f[b, i] = max(z[b, i], 0.0)
    return f


def np_batch_topk(z, k):
    r = np.maximum(z, 0.0)
    cells = sorted(((r[b, i], b, i) for b in range(z.shape[0]) for i in range(z.shape[1])), reverse=True)
    f = np.zeros_like(z)
    for v, b, i in cells[: k * z.shape[0]]:
        f[b, i] = v
    return f


def np_sq_err(x, x_hat):
    return sum(sum((x_hat[b, j] - x[b, j]) ** 2 for j in range(x.shape[1])) for b in range(x.shape[0]))


def np_var_sum(x):
    mean = x.mean(0)
    return sum(((x[b] - mean) ** 2).sum() for b in range(x.shape[0]))


@pytest.mark.parametrize("shape", [(5, 8, 16, 3), (7, 16, 32, 5), (2, 4, 8, 8)])
def test_topk_activation_and_sparse_codes(shape):
    b, d, m, k = shape
    rng = np.random.default_rng(b)
    p = rand_params(rng, d, m)
    x = rng.normal(size=(b, d)).astype(np.float32)
    z = np_pre(p, x)
    want = np_topk(z, k)

    @jax.jit
    def run(p, x):
        dense = ops.topk_activation(ops.pre_activation(x, p["W_enc"], p["b_enc"], p["b_dec"]), k)
        values, indices, _, _ = ops.topk_encode(
            x - p["b_dec"], p["W_enc"], p["b_enc"], jnp.zeros(m, bool), k, 0
        )
        return (
            dense,
            ops.scatter_last(values, indices, m),
            ops.sparse_decode(values, indices, p["W_dec"], p["b_dec"]),
        )

    dense, sparse, x_hat = run(p, x)
    np.testing.assert_allclose(dense, want, **TOL)
    np.testing.assert_allclose(sparse, want, **TOL)
    np.testing.assert_allclose(x_hat, want @ p["W_dec"] + p["b_dec"], **TOL)


@pytest.mark.parametrize("b,m,k", [(3, 8, 2), (4, 16, 5), (6, 5, 5)])
def test_batch_topk_keeps_k_times_batch_largest(b, m, k):
    z = np.random.default_rng(m).normal(size=(b, m)).astype(np.float32)
    np.testing.assert_allclose(ops.batch_topk_activation(jnp.asarray(z), k), np_batch_topk(z, k), **TOL)


def test_gated_and_jumprelu_forward():
    rng = np.random.default_rng(1)
    d, m, b = 8, 16, 6
    p = rand_params(rng, d, m, "gated")
    x = rng.normal(size=(b, d)).astype(np.float32)
    xc = x.astype(np.float64) - p["b_dec"]
    want = np.zeros((b, m))
    for t in range(b):
        for i in range(m):
            gate = xc[t] @ p["W_enc"][:, i] + p["b_gate"][i]
            mag = xc[t] @ (p["W_enc"][:, i] * np.exp(p["r_mag"][i])) + p["b_mag"][i]
            want[t, i] = float(gate > 0) * max(mag, 0.0)
    got = ops.gated_activation(
        *ops.gated_pre_activations(x, p["W_enc"], p["b_gate"], p["r_mag"], p["b_mag"], p["b_dec"])
    )
    np.testing.assert_allclose(got, want, **TOL)
    z = rng.normal(size=(b, m)).astype(np.float32)
    theta = np.abs(rng.normal(size=m)).astype(np.float32)
    want = np.array([[z[t, i] if z[t, i] > theta[i] else 0.0 for i in range(m)] for t in range(b)])
    np.testing.assert_allclose(ops.jumprelu(z, theta, 0.01), want, **TOL)
    np.testing.assert_allclose(ops.step(z, theta, 0.01), (want != 0).astype(np.float32), **TOL)


@pytest.mark.parametrize("eps", [0.5, 0.05])
def test_jumprelu_and_step_straight_through_gradients(eps):
    """Hand-derived: d/dz JumpReLU = H(z - theta), d/dtheta = -(theta/eps) K((z - theta)/eps) summed over the
    batch; d/dz H = 0, d/dtheta H = -(1/eps) K(...)."""
    rng = np.random.default_rng(2)
    b, m = 9, 7
    theta = (0.5 + rng.random(m)).astype(np.float32)
    z = (theta + rng.uniform(-eps, eps, size=(b, m))).astype(np.float32)  # many points inside the kernel
    w = rng.normal(size=(b, m)).astype(np.float32)
    gz, gt = jax.grad(lambda z, t: jnp.sum(w * ops.jumprelu(z, t, eps)), argnums=(0, 1))(z, theta)
    sz, st = jax.grad(lambda z, t: jnp.sum(w * ops.step(z, t, eps)), argnums=(0, 1))(z, theta)
    want_gz, want_gt, want_st = np.zeros((b, m)), np.zeros(m), np.zeros(m)
    for t in range(b):
        for i in range(m):
            inside = abs((z[t, i] - theta[i]) / eps) < 0.5
            want_gz[t, i] = w[t, i] * (z[t, i] > theta[i])
            want_gt[i] += w[t, i] * (-theta[i] / eps) * inside
            want_st[i] += w[t, i] * (-1.0 / eps) * inside
    assert np.abs(want_gt).max() > 0
    np.testing.assert_allclose(gz, want_gz, **TOL)
    np.testing.assert_allclose(gt, want_gt, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(sz, 0.0)
    np.testing.assert_allclose(st, want_st, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(6, 8, 16, 3, 4), (5, 16, 32, 4, 8)])
def test_sparse_topk_gradients_equal_dense_autodiff(shape):
    """The hand-written backward passes of topk_encode / sparse_decode (incl. AuxK) against jax.grad of the
    dense form: scatter to [B, d_sae], dense decode."""
    b, d, m, k, k_aux = shape
    rng = np.random.default_rng(3)
    p = {key: jnp.asarray(v) for key, v in rand_params(rng, d, m).items()}
    x = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
    dead = jnp.asarray(rng.random(m) < 0.5)
    w = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)

    def sparse(p):
        v, i, av, ai = ops.topk_encode(x - p["b_dec"], p["W_enc"], p["b_enc"], dead, k, k_aux)
        x_hat = ops.sparse_decode(v, i, p["W_dec"], p["b_dec"])
        e_hat = ops.sparse_decode(av, ai, p["W_dec"], jnp.zeros(d))
        return jnp.sum(w * x_hat) + jnp.sum(jnp.sin(e_hat))

    def dense(p):
        z = ops.pre_activation(x, p["W_enc"], p["b_enc"], p["b_dec"])
        x_hat = ops.decode(ops.topk_activation(z, k), p["W_dec"], p["b_dec"])
        zd = jnp.where(dead, jax.nn.relu(z), -jnp.inf)
        av, ai = jax.lax.top_k(zd, k_aux)
        av = jnp.where(jnp.isfinite(av), av, 0.0)
        e_hat = ops.decode(ops.scatter_last(av, ai, m), p["W_dec"], 0.0)
        return jnp.sum(w * x_hat) + jnp.sum(jnp.sin(e_hat))

    sparse_vg, dense_vg = jax.jit(jax.value_and_grad(sparse)), jax.jit(jax.value_and_grad(dense))
    (vs, gs), (vd, gd) = sparse_vg(p), dense_vg(p)
    np.testing.assert_allclose(vs, vd, **TOL)
    for key in p:
        np.testing.assert_allclose(gs[key], gd[key], err_msg=key, **TOL)


def test_auxk_loss_against_numpy():
    rng = np.random.default_rng(4)
    b, d, m, k_aux = 6, 8, 16, 3
    z = rng.normal(size=(b, m)).astype(np.float32)
    dead = rng.random(m) < 0.4
    W = rng.normal(size=(m, d)).astype(np.float32)
    e = rng.normal(size=(b, d)).astype(np.float32)
    e_hat = np.zeros((b, d))
    for t in range(b):
        cand = sorted((i for i in range(m) if dead[i]), key=lambda i: -z[t, i])[:k_aux]
        for i in cand:
            e_hat[t] += max(z[t, i], 0.0) * W[i]
    want = np_sq_err(e, e_hat) / np_var_sum(e.astype(np.float64))
    np.testing.assert_allclose(ops.auxk_loss(e, z, dead, W, k_aux), want, **TOL)
    assert float(ops.auxk_loss(e, z, np.zeros(m, bool), W, k_aux)) == 0.0


def test_geometric_median_minimises_sum_of_distances():
    pts = np.random.default_rng(5).standard_t(df=1.5, size=(200, 3)).astype(np.float32)
    gm = np.asarray(ops.geometric_median(jnp.asarray(pts), iters=200), np.float64)
    cost = lambda y: np.sum(np.linalg.norm(pts - y, axis=1))
    for delta in np.eye(3) * 1e-2:
        assert cost(gm) <= cost(gm + delta) + 1e-4 and cost(gm) <= cost(gm - delta) + 1e-4
    assert cost(gm) < cost(pts.mean(0))


def test_projection_removes_parallel_component():
    rng = np.random.default_rng(6)
    W = rng.normal(size=(5, 4)).astype(np.float32)
    g = rng.normal(size=(5, 4)).astype(np.float32)
    got = np.asarray(ops.project_out_parallel(g, W))
    for i in range(5):
        u = W[i] / np.linalg.norm(W[i])
        np.testing.assert_allclose(got[i], g[i] - (g[i] @ u) * u, **TOL)


# --- losses ---------------------------------------------------------------------------------------------


def np_loss(arch, p, x, dead, lam, cfg):
    x64 = x.astype(np.float64)
    b = x.shape[0]
    if arch == "gated":
        xc = x64 - p["b_dec"]
        pi_gate = xc @ p["W_enc"] + p["b_gate"]
        pi_mag = xc @ (p["W_enc"] * np.exp(p["r_mag"])) + p["b_mag"]
        f = (pi_gate > 0) * np.maximum(pi_mag, 0)
        x_hat = f @ p["W_dec"] + p["b_dec"]
        gate = np.maximum(pi_gate, 0)
        aux_hat = gate @ p["W_dec"] + p["b_dec"]
        return (np_sq_err(x64, x_hat) + lam * gate.sum() + np_sq_err(x64, aux_hat)) / b
    z = np_pre(p, x)
    if arch == "relu":
        f = np.maximum(z, 0)
        norms = np.linalg.norm(p["W_dec"].astype(np.float64), axis=1)
        l1 = sum(abs(f[t, i]) * norms[i] for t in range(b) for i in range(f.shape[1]))
        return (np_sq_err(x64, f @ p["W_dec"] + p["b_dec"]) + lam * l1) / b
    norms = np.linalg.norm(p["W_dec"].astype(np.float64), axis=1)
    if arch == "jumprelu":
        f = np.where(z > p["threshold"], z, 0.0)
        x_hat = f @ p["W_dec"] + p["b_dec"]
        if cfg.jumprelu_sparsity == "tanh":  # Anthropic: sum_i tanh(c f_i ||W_dec,i||)
            sparsity = sum(
                np.tanh(cfg.jumprelu_tanh_scale * f[t, i] * norms[i])
                for t in range(b)
                for i in range(f.shape[1])
            )
        else:
            sparsity = (f != 0).sum()
        pre_act = sum(
            max(p["threshold"][i] - z[t, i], 0.0) * norms[i]
            for t in range(b)
            for i in range(z.shape[1])
            if dead[i]
        )
        return (np_sq_err(x64, x_hat) + lam * sparsity + cfg.pre_act_coefficient * pre_act) / b
    W_dec = p["W_dec"].astype(np.float64)
    if cfg.rescale_by_decoder_norm:  # SAELens: top-k of z * n, decode f / n (= unit rows)
        z, W_dec = z * norms, W_dec / norms[:, None]
    f = np_topk(z, cfg.k) if arch == "topk" else np_batch_topk(z, cfg.k)
    x_hat = f @ W_dec + p["b_dec"]
    nmse = np_sq_err(x64, x_hat) / np_var_sum(x64)
    if arch == "matryoshka":  # + the prefix reconstructions, each normalised like the full one
        for w in cfg.levels[:-1]:
            nmse += np_sq_err(x64, f[:, :w] @ W_dec[:w] + p["b_dec"]) / np_var_sum(x64)
    e = x64 - x_hat
    e_hat = np.zeros_like(e)
    for t in range(b):
        for i in sorted((i for i in range(z.shape[1]) if dead[i]), key=lambda i: -z[t, i])[: cfg.auxk_size]:
            e_hat[t] += max(z[t, i], 0.0) * W_dec[i]
    return nmse + cfg.aux_coefficient * np_sq_err(e, e_hat) / np_var_sum(e)


@pytest.mark.parametrize(
    "arch,d,m",
    [
        ("relu", 8, 16),
        ("gated", 12, 24),
        ("topk", 8, 16),
        ("topk", 12, 24),
        ("batchtopk", 12, 24),
        ("matryoshka", 12, 24),
        ("jumprelu", 8, 16),
        ("jumprelu-tanh", 8, 16),
    ],
)
def test_losses_against_numpy(arch, d, m):
    rng = np.random.default_rng(d + m)
    extra = {"jumprelu_sparsity": "tanh", "pre_act_coefficient": 0.3} if arch == "jumprelu-tanh" else {}
    arch = arch.split("-")[0]
    cfg = SAEConfig(d_in=d, d_sae=m, architecture=arch, k=3, k_aux=4, matryoshka_widths=(4, 10), **extra)
    p = rand_params(rng, d, m, arch)
    x = rng.normal(size=(7, d)).astype(np.float32)
    dead = rng.random(m) < 0.5
    loss_fn = jax.jit(lambda q, x, dead: losses.sae_loss(q, x, dead, 0.7, cfg)[0])
    loss = loss_fn({k: jnp.asarray(v) for k, v in p.items()}, jnp.asarray(x), jnp.asarray(dead))
    np.testing.assert_allclose(loss, np_loss(arch, p, x, dead, 0.7, cfg), **TOL)


def test_gated_gradients_respect_stop_gradients():
    """Hand-derived gradients of the paper-faithful gated loss: W_dec only sees the main MSE term
    (2/B f^T (x_hat - x)); b_gate sees the L1 term and the aux term through ReLU(pi_gate) only."""
    rng = np.random.default_rng(7)
    d, m, b, lam = 6, 10, 8, 0.3
    cfg = SAEConfig(d_in=d, d_sae=m, architecture="gated")
    p = rand_params(rng, d, m, "gated")
    x = rng.normal(size=(b, d)).astype(np.float32)
    grad_fn = jax.jit(jax.grad(lambda q: losses.gated_loss(q, jnp.asarray(x), None, lam, cfg)[0]))
    g = grad_fn({k: jnp.asarray(v) for k, v in p.items()})
    xc = x.astype(np.float64) - p["b_dec"]
    pi_gate = xc @ p["W_enc"] + p["b_gate"]
    f = (pi_gate > 0) * np.maximum(xc @ (p["W_enc"] * np.exp(p["r_mag"])) + p["b_mag"], 0)
    x_hat = f @ p["W_dec"] + p["b_dec"]
    aux_hat = np.maximum(pi_gate, 0) @ p["W_dec"] + p["b_dec"]
    want_W_dec = np.zeros((m, d))
    want_b_gate = np.zeros(m)
    for t in range(b):
        want_W_dec += 2.0 / b * np.outer(f[t], x_hat[t] - x[t])
        on = pi_gate[t] > 0
        want_b_gate += on * (lam / b + 2.0 / b * (p["W_dec"] @ (aux_hat[t] - x[t])))
    np.testing.assert_allclose(g["W_dec"], want_W_dec, **TOL)
    np.testing.assert_allclose(g["b_gate"], want_b_gate, **TOL)


@pytest.mark.parametrize("some_dead", [False, True])
def test_topk_loss_gradients_equal_dense_autodiff(some_dead):
    """The TopK loss as trained (sparse codes, b_dec's gradient through the encoder bias, AuxK under a cond,
    decoder-norm rescaling) has the gradients of its dense form, with and without dead latents."""
    rng = np.random.default_rng(11)
    d, m, b = 8, 24, 9
    cfg = SAEConfig(d_in=d, d_sae=m, architecture="topk", k=3, k_aux=4)
    p = {key: jnp.asarray(v) for key, v in rand_params(rng, d, m).items()}
    x = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
    dead = jnp.asarray((rng.random(m) < 0.5) & some_dead)

    def dense(p):
        n = ops.row_norms(p["W_dec"])
        z = ops.pre_activation(x, p["W_enc"] * n, p["b_enc"] * n, p["b_dec"])
        W_dec = p["W_dec"] / n[:, None]
        x_hat = ops.decode(ops.topk_activation(z, cfg.k), W_dec, p["b_dec"])
        aux = ops.auxk_loss(x - x_hat, z, dead, W_dec, cfg.auxk_size)
        return ops.normalized_mse(x, x_hat) + cfg.aux_coefficient * aux

    sparse = lambda p: losses.sae_loss(p, x, dead, 0.0, cfg)[0]
    (vs, gs), (vd, gd) = jax.jit(jax.value_and_grad(sparse))(p), jax.jit(jax.value_and_grad(dense))(p)
    np.testing.assert_allclose(vs, vd, **TOL)
    for key in p:
        np.testing.assert_allclose(gs[key], gd[key], err_msg=key, **TOL)


@pytest.mark.parametrize("bandwidth", [0.05, 0.5])
def test_jumprelu_loss_and_gradients_against_sae_lens(bandwidth):
    """Where sae-lens is installed: the JumpReLU step-mode loss and every gradient (the threshold's through
    the pseudo-derivatives of JumpReLU and of the Heaviside L0) equal its JumpReLUTrainingSAE's on the same
    parameters and inputs."""
    pytest.importorskip("sae_lens")
    torch = pytest.importorskip("torch")
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    rng = np.random.default_rng(21)
    d, m, b, lam = 8, 16, 64, 0.7
    p = rand_params(rng, d, m, "jumprelu")
    p["threshold"] = (np.abs(p["threshold"]) + 0.05).astype(np.float32)
    x = rng.normal(size=(b, d)).astype(np.float32)
    cfg = SAEConfig(d_in=d, d_sae=m, architecture="jumprelu", jumprelu_bandwidth=bandwidth)
    theirs = JumpReLUTrainingSAE(
        JumpReLUTrainingSAEConfig(d_in=d, d_sae=m, jumprelu_bandwidth=bandwidth, l0_coefficient=lam)
    )
    with torch.no_grad():
        for k, v in p.items():
            getattr(theirs, k).copy_(torch.from_numpy(v))
    out = theirs.training_forward_pass(
        TrainStepInput(
            sae_in=torch.from_numpy(x),
            coefficients={"l0": lam},
            dead_neuron_mask=None,
            n_training_steps=0,
            is_logging_step=False,
        )
    )
    out.loss.backward()
    loss_fn = lambda q: losses.sae_loss(q, jnp.asarray(x), jnp.zeros(m, bool), lam, cfg)[0]
    loss, grads = jax.value_and_grad(loss_fn)({k: jnp.asarray(v) for k, v in p.items()})
    np.testing.assert_allclose(loss, out.loss.item(), **TOL)
    assert np.count_nonzero(grads["threshold"]) > m // 2  # the kernel windows are hit
    for k in p:
        np.testing.assert_allclose(grads[k], getattr(theirs, k).grad.numpy(), err_msg=k, **TOL)
