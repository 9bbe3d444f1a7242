"""Causal 3D VAE: convolution and depth-to-space against numpy loops, shapes, causality, KL, training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tora.config import OPENSORA_OPTIMIZER, RunConfig, VAEConfig
from tora.train import init_state, make_train_step
from tora.vae import VAE3D, CausalConv3d, depth_to_space, kl_divergence

RNG = np.random.default_rng(2)
CFG = VAEConfig.tiny()  # x2 in time, x4 in space


@pytest.mark.parametrize("strides", [(1, 1, 1), (2, 2, 2)])
def test_causal_conv_matches_numpy_loop(strides):
    x = RNG.normal(size=(1, 4, 4, 4, 2)).astype(np.float32)
    conv = CausalConv3d(3, strides=strides)
    p = jax.jit(conv.init)(jax.random.key(0), x)
    got = np.asarray(jax.jit(conv.apply)(p, x))
    w = np.asarray(p["params"]["kernel"].value)
    bias = np.asarray(p["params"]["bias"].value)
    st, ss, _ = strides
    tp = 3 - st  # causal: zeros in front of the clip only
    xp = np.pad(x, ((0, 0), (tp, 0), (1, 1), (1, 1), (0, 0)))
    to = (xp.shape[1] - 3) // st + 1
    ho = (xp.shape[2] - 3) // ss + 1
    want = np.zeros((1, to, ho, ho, 3))
    for t in range(to):
        for i in range(ho):
            for j in range(ho):
                patch = xp[0, t * st : t * st + 3, i * ss : i * ss + 3, j * ss : j * ss + 3]  # [3, 3, 3, Cin]
                want[0, t, i, j] = np.einsum("abcd,abcde->e", patch, w) + bias
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_depth_to_space_and_kl_match_numpy():
    x = RNG.normal(size=(1, 2, 2, 3, 2 * 2 * 2 * 2)).astype(np.float32)
    got = np.asarray(depth_to_space(jnp.asarray(x), 2, 2))
    for t in range(4):
        for h in range(4):
            for w in range(6):
                for c in range(2):
                    # channel layout (C, ts, hs, ws), as Open-Sora's "B (C ts hs ws) T H W" rearrange
                    src = x[0, t // 2, h // 2, w // 2, ((c * 2 + t % 2) * 2 + h % 2) * 2 + w % 2]
                    assert got[0, t, h, w, c] == src
    mean, logvar = (
        RNG.normal(size=(2, 3, 4)).astype(np.float32),
        RNG.normal(size=(2, 3, 4)).astype(np.float32),
    )
    want = [0.5 * np.sum(mean[b] ** 2 + np.exp(logvar[b]) - 1 - logvar[b]) for b in range(2)]
    np.testing.assert_allclose(kl_divergence(jnp.asarray(mean), jnp.asarray(logvar)), want, rtol=1e-5)


@pytest.fixture(scope="module")
def vae():
    m = VAE3D(CFG)
    x = jnp.zeros((1, 5, 8, 8, 3))
    v = jax.jit(m.init)(jax.random.key(0), x)
    encode = jax.jit(lambda v, x: m.apply(v, x, method=VAE3D.encode))
    return m, v, encode


def test_shapes_and_padding(vae):
    m, v, encode = vae
    x = jnp.asarray(RNG.uniform(-1, 1, size=(1, 5, 8, 8, 3)), jnp.float32)
    mean, logvar = encode(v, x)
    assert mean.shape == logvar.shape == (1, 3, 2, 2, CFG.latent_channels)  # 5 frames -> pad 1 -> 3 latents
    recon, _, _ = jax.jit(m.apply)(v, x, jax.random.key(1))
    assert recon.shape == x.shape
    assert VAEConfig().temporal_factor == 4 and VAEConfig().spatial_factor == 8  # Open-Sora default
    shapes = jax.eval_shape(VAE3D(VAEConfig()).init, jax.random.key(0), jnp.zeros((1, 17, 64, 64, 3)))
    z = jax.eval_shape(
        lambda p, x: VAE3D(VAEConfig()).apply(p, x, method=VAE3D.encode)[0],
        shapes,
        jnp.zeros((1, 17, 64, 64, 3)),
    )
    assert z.shape == (1, 5, 8, 8, 4)  # 17 frames -> 5 latents, as Open-Sora's micro clips


def test_encoder_is_causal(vae):
    """Latent frame j depends only on (front-padded) input frames < (j + 1) * ft."""
    _, v, encode = vae
    x = jnp.asarray(RNG.uniform(-1, 1, size=(1, 6, 8, 8, 3)), jnp.float32)
    base = np.asarray(encode(v, x)[0])
    for k in (2, 4):  # change frames k.. (ft = 2, no padding for 6 frames)
        later = x.at[:, k:].set(jnp.asarray(RNG.uniform(-1, 1, size=(1, 6 - k, 8, 8, 3)), jnp.float32))
        out = np.asarray(encode(v, later)[0])
        np.testing.assert_array_equal(out[:, : k // 2], base[:, : k // 2])  # the past is untouched
        assert not np.allclose(out[:, k // 2 :], base[:, k // 2 :])  # the future does change


@pytest.mark.slow
def test_vae_train_step_reduces_the_loss(vae):
    m, v, _ = vae
    x = jnp.asarray(RNG.uniform(-1, 1, size=(2, 4, 8, 8, 3)), jnp.float32)
    run = RunConfig(model=CFG, optimizer=OPENSORA_OPTIMIZER.replace(learning_rate=3e-3, warmup_steps=0), steps=30)
    state = init_state(run, params=__import__("flax").linen.meta.unbox(v)["params"]).state
    step = make_train_step(run)
    first = None
    for _ in range(30):
        state, metrics = step(state, {"x": x}, jax.random.key(0))
        first = first if first is not None else float(metrics["loss"])
    assert float(metrics["loss"]) < 0.7 * first
