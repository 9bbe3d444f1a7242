"""Open-Sora 1.2's VAE (`tora.OpenSoraVAE`) against a PyTorch transcription, and `tora.load_opensora_vae`.

The reference is `tests/tora/opensora_vae_ref.py`, transcribed from hpcaitech/Open-Sora branch opensora/v1.2
(commit bde3c420a19e7f84a4f3144e01eeb132b9e33a06): opensora/models/vae/vae.py (VideoAutoencoderKL,
VideoAutoencoderPipeline, OpenSoraVAE_V1_2), opensora/models/vae/vae_temporal.py (VAE_Temporal_SD),
opensora/models/vae/utils.py; and from huggingface/diffusers (commit 04957c2003faa079d73e5a749655ccc0ba4bddbf)
src/diffusers/models/autoencoders/vae.py (Encoder, Decoder) with the blocks they use (ResnetBlock2D,
UNetMidBlock2D's Attention, Downsample2D, Upsample2D). Its state dicts carry the released
hpcai-tech/OpenSora-VAE-v1.2 key names; weights are random (no download here).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tora  # noqa: E402
from tests.tora import opensora_vae_ref as ref  # noqa: E402
from tora.vae_opensora import OpenSoraVAE, OpenSoraVAEConfig, SpatialVAE, TemporalVAE  # noqa: E402

CFG = OpenSoraVAEConfig.tiny()
SPATIAL = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4)
TEMPORAL = dict(filters=8, num_res_blocks=1, num_groups=4)


def perturbed(m, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():  # GroupNorm affine and biases away from their 1 / 0 init
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """torch's thread pool spins against XLA's on a busy 2-core machine (seconds per tiny call)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pipeline():
    tm = perturbed(ref.OpenSoraVAE_V1_2(micro_batch_size=4, micro_frame_size=17, spatial=SPATIAL, temporal=TEMPORAL))
    return tm, tora.load_opensora_vae(tm.state_dict(), CFG)


def to_torch(x):  # [B, T, H, W, C] -> [B, C, T, H, W]
    return torch.tensor(np.asarray(x)).permute(0, 4, 1, 2, 3)


def from_torch(x):
    return x.permute(0, 2, 3, 4, 1).detach().numpy()


def video(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_spatial_vae_matches_transcription(pipeline):
    tm, params = pipeline
    x = video((1, 3, 8, 8, 3))
    sp = params["spatial_vae"]
    with torch.no_grad():
        want_z = tm.spatial_vae.encode(to_torch(x))
        want_x = tm.spatial_vae.decode(want_z)
    cfg = CFG.spatial.replace(micro_batch_size=2)  # micro-batches of 2 frames, the last one padded
    z = jax.jit(lambda p, v: SpatialVAE(cfg).apply({"params": p}, v, method="encode"))(sp, x)
    assert z.shape == (1, 3, 4, 4, 4)
    np.testing.assert_allclose(np.asarray(z), from_torch(want_z), atol=1e-4, rtol=1e-4)
    got = jax.jit(lambda p, v: SpatialVAE(cfg).apply({"params": p}, v, method="decode"))(sp, from_torch(want_z))
    np.testing.assert_allclose(np.asarray(got), from_torch(want_x), atol=1e-4, rtol=1e-4)


def test_temporal_vae_matches_transcription(pipeline):
    tm, params = pipeline
    x = video((2, 9, 2, 3, 4), seed=1)  # 9 frames: front-padded to 12 -> 3 latent frames
    tp = params["temporal_vae"]
    with torch.no_grad():
        post = tm.temporal_vae.encode(to_torch(x))
        want_x = tm.temporal_vae.decode(post.mean, num_frames=9)
    mean, logvar = jax.jit(lambda p, v: TemporalVAE(CFG.temporal).apply({"params": p}, v, method="encode"))(tp, x)
    assert mean.shape == (2, 3, 2, 3, 4)
    np.testing.assert_allclose(np.asarray(mean), from_torch(post.mean), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(logvar), from_torch(post.logvar), atol=1e-4, rtol=1e-4)
    got = jax.jit(lambda p, z: TemporalVAE(CFG.temporal).apply({"params": p}, z, 9, method="decode"))(
        tp, from_torch(post.mean))
    assert got.shape == (2, 9, 2, 3, 4)
    np.testing.assert_allclose(np.asarray(got), from_torch(want_x), atol=1e-4, rtol=1e-4)

@pytest.mark.slow

def test_pipeline_matches_transcription(pipeline):
    tm, params = pipeline
    x = video((1, 37, 4, 4, 3), seed=2)  # chunks of 17 + 17 + 3 frames -> 5 + 5 + 1 latent frames
    with torch.no_grad():
        want_z = tm.encode(to_torch(x))
        want_x = tm.decode(want_z, num_frames=37)
    assert tm.get_latent_size([37, 4, 4])[0] == CFG.latent_frames(37) == 11
    m = OpenSoraVAE(CFG)
    z = jax.jit(lambda p, v: m.apply({"params": p}, v, method="encode"))(params, x)
    assert z.shape == (1, 11, 2, 2, 4)
    np.testing.assert_allclose(np.asarray(z), from_torch(want_z), atol=1e-4, rtol=1e-4)
    got = jax.jit(lambda p, v: m.apply({"params": p}, v, 37, method="decode"))(params, from_torch(want_z))
    assert got.shape == x.shape
    np.testing.assert_allclose(np.asarray(got), from_torch(want_x), atol=1e-4, rtol=1e-4)


def test_frame_count_rule(pipeline):
    tm, params = pipeline
    for frames, latents in [(17, 5), (51, 15), (102, 30), (1, 1), (16, 4), (20, 6), (37, 11)]:
        assert CFG.latent_frames(frames) == latents == tm.get_latent_size([frames, 8, 8])[0], frames
    m = OpenSoraVAE(CFG)
    for frames, latents in [(17, 5), (51, 15)]:  # traced shapes (no compute)
        z = jax.eval_shape(lambda p, v: m.apply({"params": p}, v, method="encode"), params,
                           jax.ShapeDtypeStruct((1, frames, 2, 2, 3), jnp.float32))
        assert z.shape == (1, latents, 1, 1, 4)
        x = jax.eval_shape(lambda p, v: m.apply({"params": p}, v, method="decode"), params, z)
        assert x.shape == (1, frames, 2, 2, 3)  # the default num_frames: the longest clip with these latents


def test_full_size_keys_and_shapes_are_complete():
    with torch.device("meta"):
        tm = ref.OpenSoraVAE_V1_2()  # the released config: SDXL VAE + VAE_Temporal_SD
    want = {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    got = tora.opensora_vae_state_dict_shapes(OpenSoraVAEConfig())
    assert set(got) == set(want), (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5])
    assert got == want
    n = sum(int(np.prod(s)) for k, s in want.items() if k not in ("scale", "shift"))
    assert n == sum(p.numel() for p in tm.parameters())


def test_loader_names_missing_unexpected_and_misshaped_keys(pipeline, tmp_path):
    tm, params = pipeline
    sd = {k: v.clone() for k, v in tm.state_dict().items()}
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "model.safetensors"))
    from_file = tora.load_opensora_vae(tmp_path / "model.safetensors", CFG)
    jax.tree.map(np.testing.assert_array_equal, from_file, params)
    bad = dict(sd)
    del bad["spatial_vae.module.encoder.conv_in.weight"]
    with pytest.raises(ValueError, match=r"missing \['spatial_vae.module.encoder.conv_in.weight'\]"):
        tora.load_opensora_vae(bad, CFG)
    bad = {**sd, "temporal_vae.encoder.extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected \['temporal_vae.encoder.extra.weight'\]"):
        tora.load_opensora_vae(bad, CFG)
    bad = {**sd, "temporal_vae.decoder.conv_out.conv.weight": torch.zeros(4, 8, 3, 3, 1)}
    with pytest.raises(ValueError, match=r"temporal_vae.decoder.conv_out.conv.weight has shape \(4, 8, 3, 3, 1\)"):
        tora.load_opensora_vae(bad, CFG)
    bad = {**sd, "scale": torch.ones(1, 4, 1, 1, 1)}
    with pytest.raises(ValueError, match="scale buffer"):
        tora.load_opensora_vae(bad, CFG)
    with pytest.raises(ValueError, match="unexpected"):  # the released config does not fit a tiny checkpoint
        tora.load_opensora_vae(sd)


def test_loader_accepts_diffusers_deprecated_attention_names(pipeline):
    tm, params = pipeline
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    sd = {}
    for k, v in tm.state_dict().items():
        for new, dep in old.items():
            k = k.replace(f".attentions.0.{new}.", f".attentions.0.{dep}.")
        sd[k] = v[:, :, None, None] if ".attentions.0.query.weight" in k else v  # 1x1-conv layout too
    jax.tree.map(np.testing.assert_array_equal, tora.load_opensora_vae(sd, CFG), params)


def test_load_opensora_returns_backbone_and_vae(pipeline):
    from tests.tora.opensora_ref import STDiT3

    tiny = dict(in_channels=4, caption_channels=16, model_max_length=4, hidden_size=32, depth=1, num_heads=2)
    backbone, vae = tora.load_opensora(STDiT3(**tiny).state_dict(), tora.STDiTConfig(**tiny),
                                       vae=pipeline[0].state_dict(), vae_config=CFG)
    assert "x_embedder" in backbone and set(vae) == {"spatial_vae", "temporal_vae"}


def test_sampling_uses_the_rng():
    sp = dict(block_out_channels=(8,), layers_per_block=1, norm_num_groups=4)  # one level each: a small graph
    tp = dict(filters=8, num_res_blocks=1, channel_multipliers=(1,), temporal_downsample=(), num_groups=4)
    cfg = OpenSoraVAEConfig.tiny(spatial=tora.SDVAEConfig(**sp), temporal=tora.TemporalVAEConfig(**tp))
    params = tora.load_opensora_vae(ref.OpenSoraVAE_V1_2(spatial={**sp, "latent_channels": 4}, temporal=tp)
                                    .state_dict(), cfg)
    m, x = OpenSoraVAE(cfg), video((1, 2, 2, 2, 3), seed=3)
    enc = jax.jit(lambda p, v, r: m.apply({"params": p}, v, r, method="encode"))
    a, b = enc(params, x, jax.random.key(0)), enc(params, x, jax.random.key(1))
    assert a.shape == (1, 2, 2, 2, 4) and np.isfinite(np.asarray(a)).all() and not np.allclose(a, b)


def test_config_rejects_inconsistent_stages():
    with pytest.raises(ValueError, match="temporal VAE takes 8 channels but the spatial VAE gives 4"):
        OpenSoraVAEConfig(temporal=tora.TemporalVAEConfig(in_out_channels=8))
    with pytest.raises(ValueError, match="temporal_downsample needs one entry per level transition"):
        tora.TemporalVAEConfig(temporal_downsample=(True,))


# ------------------------------------------------------------------------------------------ bad input
def test_wrong_channel_count_raises(pipeline):
    with pytest.raises(ValueError, match="has 4 channels; the Open-Sora VAE expects 3"):
        OpenSoraVAE(CFG).apply({"params": pipeline[1]}, jnp.zeros((1, 2, 4, 4, 4)), method="encode")
    with pytest.raises(ValueError, match="has 3 channels; the Open-Sora VAE expects 4"):
        OpenSoraVAE(CFG).apply({"params": pipeline[1]}, jnp.zeros((1, 2, 2, 2, 3)), method="decode")


def test_fewer_than_one_frame_raises(pipeline):
    with pytest.raises(ValueError, match="has 0 frames; expected at least 1"):
        OpenSoraVAE(CFG).apply({"params": pipeline[1]}, jnp.zeros((1, 0, 4, 4, 3)), method="encode")
    with pytest.raises(ValueError, match="num_frames=0"):
        OpenSoraVAE(CFG).apply({"params": pipeline[1]}, jnp.zeros((1, 1, 2, 2, 4)), 0, method="decode")


def test_non_finite_input_raises(pipeline):
    x = np.zeros((1, 2, 4, 4, 3), np.float32)
    x[0, 1, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        OpenSoraVAE(CFG).apply({"params": pipeline[1]}, x, method="encode")
    with pytest.raises(ValueError, match="NaN or infinite"):
        OpenSoraVAE(CFG).apply({"params": pipeline[1]}, jnp.full((1, 1, 2, 2, 4), jnp.inf), method="decode")


def test_init_matches_loader_layout():
    """A freshly initialised OpenSoraVAE has exactly the loader's tree (so loaded params drop in)."""
    m = OpenSoraVAE(CFG)
    abstract = jax.eval_shape(lambda: nn.meta.unbox(m.init(jax.random.key(0), jnp.zeros((1, 1, 2, 2, 3)))))
    sd = ref.OpenSoraVAE_V1_2(spatial=SPATIAL, temporal=TEMPORAL).state_dict()
    loaded = tora.load_opensora_vae(sd, CFG)
    assert jax.tree.structure(abstract["params"]) == jax.tree.structure(loaded)
    assert jax.tree.map(lambda a: a.shape, abstract["params"]) == jax.tree.map(lambda a: a.shape, loaded)
