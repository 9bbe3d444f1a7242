"""Rectified flow: timestep sampling and shift, noising with conditioning frames, the masked loss."""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tora import ops
from tora.config import FlowConfig
from tora.flow import latent_shift_ratio, make_loss_fn, sample_t, training_inputs


class ZeroModel(nn.Module):
    """Predicts v = 0 (plus a dummy parameter): the loss is then the masked mean of (x0 - noise)^2."""

    config: Any = None

    @nn.compact
    def __call__(self, x, t, y, y_mask=None, fps=None, x_mask=None, motion=None, y_drop=None):
        return jnp.zeros_like(x) * self.param("w", nn.initializers.ones, ())


def test_sample_t_distributions():
    t = np.asarray(sample_t(jax.random.key(0), 20000, FlowConfig()))
    assert t.min() > 0 and t.max() < 1
    logit = np.log(t / (1 - t))
    assert abs(logit.mean()) < 0.03 and abs(logit.std() - 1) < 0.03  # logit of t ~ N(0, 1)
    u = np.asarray(sample_t(jax.random.key(0), 20000, FlowConfig(sample_method="uniform")))
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003


def test_latent_shift_ratio_matches_opensora_from_17_frames():
    # 51 frames at 480x848 -> 15 latent frames of 60 x 106 (VAE x8): Open-Sora's ratio
    r = float(latent_shift_ratio((1, 15, 60, 106, 4), FlowConfig()))
    assert r == pytest.approx(math.sqrt(480 * 848 / 512**2) * math.sqrt(51 // 17 * 5), rel=1e-6)
    # an image: no temporal factor
    assert float(latent_shift_ratio((1, 1, 64, 64, 4), FlowConfig())) == pytest.approx(1.0)


@pytest.mark.parametrize("shift", [False, True])
def test_training_inputs_noise_and_conditioning_frames(shift):
    cfg = FlowConfig(use_timestep_transform=shift)
    x0 = jax.random.normal(jax.random.key(1), (3, 4, 2, 2, 2))
    mask = jnp.array([[True, False, True, True], [False] * 4, [True] * 4])
    x_t, t, v = training_inputs(x0, jax.random.key(2), cfg, mask)
    noise = x0 - v
    x, t_np, n = map(np.asarray, (x0, t, noise))
    for b in range(3):
        for f in range(4):
            want = x[b, f] if not mask[b, f] else (1 - t_np[b]) * x[b, f] + t_np[b] * n[b, f]
            np.testing.assert_allclose(np.asarray(x_t[b, f]), want, atol=1e-5)
    raw = sample_t(jax.random.split(jax.random.key(2))[0], 3, cfg)
    want_t = ops.timestep_shift(raw, latent_shift_ratio(x0.shape, cfg)) if shift else raw
    np.testing.assert_allclose(t, want_t, atol=1e-6)


def test_loss_is_masked_mean_over_noised_frames():
    model = ZeroModel()
    params = {"w": jnp.ones(())}
    loss_fn = jax.jit(make_loss_fn(model, FlowConfig(caption_dropout=0.0)))
    x0 = jax.random.normal(jax.random.key(3), (2, 3, 2, 2, 2))
    mask = jnp.array([[True, False, True], [False, True, False]])
    batch = {"x": x0, "y": jnp.zeros((2, 1, 1)), "x_mask": mask}
    rng = jax.random.key(4)
    loss, _ = loss_fn(params, batch, rng)
    _, _, v = training_inputs(x0, jax.random.split(rng)[0], FlowConfig(), mask)
    v = np.asarray(v)
    per = [np.mean([np.mean(v[b, f] ** 2) for f in range(3) if mask[b, f]]) for b in range(2)]
    assert float(loss) == pytest.approx(np.mean(per), rel=1e-5)
    # conditioning frames do not enter the loss: change them and the loss stays
    loss2, _ = loss_fn(params, {**batch, "x": x0.at[0, 1].add(5.0).at[1, 0].add(-3.0)}, rng)
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
    loss3, _ = loss_fn(params, {**batch, "x": x0.at[0, 0].add(5.0)}, rng)
    assert float(loss3) != pytest.approx(float(loss), rel=1e-3)
