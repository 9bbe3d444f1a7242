"""Every documented ValueError, raised from shapes alone (before any tracing or compute)."""

import jax
import jax.numpy as jnp
import pytest

import jaxzoo
from tora import ops
from tora.config import FlowConfig, STDiTConfig, VAEConfig
from tora.flow import latent_shift_ratio
from tora.sample import make_sampler
from tora.stdit import STDiT
from tora.vae import VAE3D

CFG = STDiTConfig.tiny(depth=1)
X, T, Y = jnp.zeros((2, 2, 4, 4, 4)), jnp.zeros(2), jnp.zeros((2, 3, CFG.caption_channels))


def init(*args, **kwargs):
    return jax.eval_shape(lambda: STDiT(CFG).init(jax.random.key(0), *args, **kwargs))


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((jnp.zeros((2, 4, 4, 4)), T, Y), {}, r"latents x of shape \[B, T, H, W, C\]"),
        ((jnp.zeros((2, 0, 4, 4, 4)), T, Y), {}, r"num_frames >= 1.*cannot cover even after padding"),
        ((jnp.zeros((2, 2, 4, 0, 4)), T, Y), {}, r"cannot cover even after padding"),
        ((jnp.zeros((2, 2, 4, 4, 3)), T, Y), {}, r"3 channels but the config expects in_channels=4"),
        ((X, jnp.zeros(3), Y), {}, r"t must have shape \[B\]"),
        ((X, T, jnp.zeros((2, 3, 5))), {}, r"y must have shape \[B, Ly, caption_channels\]"),
        ((X, T, jnp.zeros((2, 9, CFG.caption_channels))), {}, r"more than model_max_length=8"),
        ((X, T, Y), {"y_mask": jnp.ones((2, 4), bool)}, r"caption mask y_mask must have shape \[B, Ly\]"),
        (
            (X, T, Y),
            {"x_mask": jnp.ones((2, 3), bool)},
            r"frame mask x_mask must have shape \[B, T\] = \(2, 2\)",
        ),
        ((X, T, Y), {"fps": jnp.ones(3)}, r"fps must be a scalar or have shape \[B\]"),
        ((X, T, Y), {"motion": [None, None]}, r"one entry per block pair \(depth=1\)"),
        ((X, jnp.array([0.5, 500.0]), Y), {}, r"timesteps t must lie in \[0, 1\].*0-1000 units"),
        ((X, jnp.array([-0.1, 0.5]), Y), {}, r"timesteps t must lie in \[0, 1\]"),
        ((X, T, Y), {"y_mask": jnp.array([[1, 0, 0], [0, 0, 0]], bool)}, r"at least one real token.*rows \[1\]"),
        ((X, T, Y), {"motion": [jnp.zeros((2, 2, 2, 2, 8))]}, r"no motion fuser \(motion_fuser=None\)"),
        ((X, T, Y), {"y_drop": jnp.zeros((3,), bool)}, r"y_drop must have shape \[B\] = \(2,\)"),
        ((X, T, Y), {"height": jnp.ones(3)}, r"height must be a scalar or have shape \[B\]"),
    ],
)
def test_stdit_input_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        init(*args, **kwargs)


def test_motion_channel_count_is_checked_at_init_and_apply():
    cfg = STDiTConfig.tiny(depth=1, motion_fuser="adanorm", motion_channels=8)
    good, bad = [jnp.zeros((2, 2, 2, 2, 8))], [jnp.zeros((2, 2, 2, 2, 5))]
    with pytest.raises(ValueError, match=r"motion\[0\] must have shape \[B, T', H', W', motion_channels=8\]"):
        jax.eval_shape(lambda: STDiT(cfg).init(jax.random.key(0), X, T, Y, motion=bad))
    v = jax.eval_shape(lambda: STDiT(cfg).init(jax.random.key(0), X, T, Y, motion=good))
    with pytest.raises(ValueError, match=r"motion_channels=8\]; got \(2, 2, 2, 2, 5\)"):
        jax.eval_shape(lambda p: STDiT(cfg).apply(p, X, T, Y, motion=bad), v)


def test_flow_rgb_outside_unit_range_raises():
    from tora.config import TrajectoryExtractorConfig
    from tora.motion import check_flow_rgb

    ext = TrajectoryExtractorConfig.tiny()
    check_flow_rgb(ext, jnp.zeros((1, 2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"flow RGB must lie in \[-1, 1\].*x / 255 \* 2 - 1"):
        check_flow_rgb(ext, jnp.full((1, 2, 4, 4, 3), 255.0))


def test_tora_sampler_needs_the_latent_size():
    from tora.config import ToraConfig
    from tora.tora_model import Tora, make_tora_sampler

    sample = make_tora_sampler(Tora(ToraConfig.tiny()))
    with pytest.raises(ValueError, match=r"needs the latent size as keywords.*\['num_frames'\] missing"):
        sample({}, jax.random.key(0), Y, None, height=4, width=4)


def test_frame_mask_needs_temporal_patch_one():
    cfg = STDiTConfig.tiny(depth=1, patch_size=(2, 2, 2))
    with pytest.raises(ValueError, match="temporal patch size of 1"):
        jax.eval_shape(lambda: STDiT(cfg).init(jax.random.key(0), X, T, Y, x_mask=jnp.ones((2, 2), bool)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_size": 30, "num_heads": 4}, "hidden_size must be a multiple of num_heads"),
        ({"hidden_size": 36, "num_heads": 4}, "RoPE needs an even head_dim"),
        ({"patch_size": (1, 2)}, "patch_size must be three positive ints"),
        ({"precision": jaxzoo.Precision(compute_dtype="float16")}, "compute_dtype must be 'float32' or 'bfloat16'"),
        ({"precision": jaxzoo.Precision(param_dtype="bfloat16")}, "keeps its parameters in float32"),
        ({"motion_fuser": "film"}, "motion_fuser must be one of"),
        ({"motion_fuser": "adanorm", "motion_channels": 0}, "needs motion_channels >= 1"),
        ({"motion_position": "both"}, "motion_position must be 'temporal' or 'spatial'"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        STDiTConfig.tiny(**kwargs)


def test_flow_and_vae_config_errors():
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        FlowConfig(guidance_scale=-1.0)
    with pytest.raises(ValueError, match="sample_method must be"):
        FlowConfig(sample_method="cosine")
    with pytest.raises(ValueError, match="one entry per level"):
        VAEConfig(channel_multipliers=(1, 2), spatial_downsample=(True,), temporal_downsample=(True, False))


def test_num_frames_below_one():
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        ops.opensora_latent_frames(0)
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        latent_shift_ratio((1, 0, 4, 4, 4), FlowConfig())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"guidance_scale": -0.5}, r"guidance scale must be >= 0"),
        ({"num_frames": 0}, r"num_frames must be >= 1"),
        ({"num_steps": 0}, r"num_steps must be >= 1"),
        (
            {"x_mask": jnp.ones((2, 3), bool), "x_cond": X},
            r"frame mask x_mask must have shape \[B, T\] = \(2, 2\)",
        ),
        ({"x_mask": jnp.ones((2, 2), bool)}, r"x_cond .* and x_mask .* go together"),
        ({"x_mask": jnp.ones((2, 2), bool), "x_cond": jnp.zeros((2, 2, 4, 4, 3))}, r"x_cond must have shape"),
        ({"num_frames": 2.5}, r"num_frames \(latent size\) must be an integer; got 2.5 of type float"),
        ({"fps": jnp.ones(3)}, r"fps must be a scalar or have shape \[B\] = \(2,\)"),
        ({"y_mask": jnp.zeros((2, 3), bool)}, r"at least one real token per clip"),
        ({"pixel_size": (51, 240)}, r"pixel_size must be \(num_frames, height, width\)"),
    ],
)
def test_sampler_errors(kwargs, match):
    sample = make_sampler(STDiT(CFG), FlowConfig())
    args = {"num_frames": 2, "height": 4, "width": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample({}, jax.random.key(0), Y, **args)


@pytest.mark.parametrize(
    "x,match",
    [
        (jnp.zeros((1, 4, 8, 3)), r"video x of shape \[B, T, H, W, C\]"),
        (jnp.zeros((1, 0, 8, 8, 3)), r"num_frames must be >= 1"),
        (jnp.zeros((1, 4, 8, 8, 2)), r"2 channels but the VAE expects in_channels=3"),
        (jnp.zeros((1, 4, 6, 8, 3)), r"multiples of the spatial factor 4"),
    ],
)
def test_vae_input_errors(x, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda: VAE3D(VAEConfig.tiny()).init(jax.random.key(0), x))
