"""tora: Tora (Zhang et al., CVPR 2025, arXiv 2407.21705) on an Open-Sora 1.2 STDiT3 backbone.

Part 1: the ST-DiT backbone (`STDiT`), rectified flow (`tora.flow`), the Euler sampler (`make_sampler`),
the causal 3D VAE (`VAE3D`), text conditioning and training (`RunConfig`, `init_state`, `make_optimizer`,
`make_train_step`, `train`, on jaxzoo's runtime). Part 2 adds the trajectory extractor and the
motion-guidance fuser.
"""

from tora import ops
from tora.config import (
    OPENSORA_OPTIMIZER,
    FlowConfig,
    RunConfig,
    STDiTConfig,
    TextConfig,
    ToraConfig,
    TrajectoryExtractorConfig,
    VAEConfig,
)
from tora.flops import flops_per_example, forward_flops
from tora.flow import latent_shift_ratio, make_loss_fn, sample_t, training_inputs
from tora.motion import FUSER_VARIANTS, MotionGuidanceFuser, TrajectoryExtractor
from tora.sample import euler_timesteps, make_sampler
from tora.stdit import SpatialBlock, STDiT, STDiTBlock, TemporalBlock
from tora.text import TokenTextEncoder, tokenize
from tora.tora_model import (
    Tora,
    freeze,
    load_base_params,
    make_tora_loss_fn,
    make_tora_sampler,
    motion_condition,
    motion_features,
    trainable_mask,
)
from tora.train import build_model, init_state, make_optimizer, make_train_step, recipe, train
from tora.trajectory import (
    flow_to_rgb,
    resample_trajectory,
    sample_sparse_tracks,
    splat_and_blur,
    track_centroids,
    trajectory_error,
    trajectory_to_flow,
)
from tora.vae import VAE3D, kl_divergence, make_vae_loss_fn
from tora.vae_opensora import OpenSoraVAE, OpenSoraVAEConfig, SDVAEConfig, TemporalVAEConfig
from tora.weights import (
    load_opensora,
    load_opensora_vae,
    opensora_state_dict_shapes,
    opensora_vae_state_dict_shapes,
)

__all__ = [
    "FUSER_VARIANTS",
    "OPENSORA_OPTIMIZER",
    "OpenSoraVAE",
    "OpenSoraVAEConfig",
    "SDVAEConfig",
    "TemporalVAEConfig",
    "load_opensora_vae",
    "opensora_vae_state_dict_shapes",
    "FlowConfig",
    "MotionGuidanceFuser",
    "RunConfig",
    "STDiT",
    "STDiTBlock",
    "STDiTConfig",
    "SpatialBlock",
    "TemporalBlock",
    "TextConfig",
    "TokenTextEncoder",
    "Tora",
    "ToraConfig",
    "TrajectoryExtractor",
    "TrajectoryExtractorConfig",
    "VAE3D",
    "VAEConfig",
    "build_model",
    "euler_timesteps",
    "flops_per_example",
    "flow_to_rgb",
    "forward_flops",
    "freeze",
    "init_state",
    "kl_divergence",
    "latent_shift_ratio",
    "load_base_params",
    "load_opensora",
    "make_loss_fn",
    "make_optimizer",
    "make_sampler",
    "make_tora_loss_fn",
    "make_tora_sampler",
    "make_train_step",
    "make_vae_loss_fn",
    "motion_condition",
    "motion_features",
    "opensora_state_dict_shapes",
    "ops",
    "recipe",
    "resample_trajectory",
    "sample_sparse_tracks",
    "sample_t",
    "sharding_examples",
    "splat_and_blur",
    "tokenize",
    "track_centroids",
    "train",
    "trainable_mask",
    "training_inputs",
    "trajectory_error",
    "trajectory_to_flow",
]


def sharding_examples() -> list[tuple[str, object, tuple]]:
    """One tiny instance and sample inputs of every Linen module class of tora, `(name, module, args)`,
    each initialisable with `jaxzoo.init_sharded` on a (data=4, model=2) mesh."""
    import jax.numpy as jnp

    from tora import motion, stdit, vae

    s = STDiTConfig.tiny(depth=1)
    c, ly = s.hidden_size, 3
    tok = jnp.zeros((4, 2, 2, 2, c))  # [B, T', H', W', C]
    y_c = jnp.zeros((4, ly, c))
    ymask = jnp.ones((4, ly), bool)
    t_mlp = jnp.zeros((4, 6 * c))
    # one frame of one 2x2 patch: parameter shapes do not depend on the input size, compile time does
    x, t, y = jnp.zeros((4, 1, 2, 2, s.in_channels)), jnp.zeros((4,)), jnp.zeros((4, ly, s.caption_channels))
    tora_cfg = ToraConfig.tiny(stdit=STDiTConfig.tiny(depth=1, in_channels=3, vae_spatial_factor=1,
                                                      motion_fuser="adanorm", motion_channels=16),
                               extractor=TrajectoryExtractorConfig.tiny(num_levels=1))
    ext = tora_cfg.extractor
    rgb = jnp.zeros((4, 1, 2, 2, 3))
    h, f = jnp.zeros((4, 2, 2, 2, c)), jnp.zeros((4, 2, 2, 2, 8))
    v = VAEConfig.tiny()
    video = jnp.zeros((4, 2, 4, 4, 3))
    tc = TextConfig.tiny()
    ids, mask = tokenize(["a red square", "a dog"] * 2, tc)
    return [
        ("STDiT", STDiT(s), (x, t, y)),
        ("STDiTBlock", STDiTBlock(s), (tok, y_c, ymask, t_mlp)),
        ("SpatialBlock", SpatialBlock(s), (tok, y_c, ymask, t_mlp)),
        ("TemporalBlock", TemporalBlock(s), (tok, y_c, ymask, t_mlp)),
        ("BlockPair", stdit.BlockPair(s), (tok, y_c, ymask, t_mlp, None, None, None)),
        ("SelfAttention", stdit.SelfAttention(s), (tok,)),
        ("CrossAttention", stdit.CrossAttention(s), (tok, y_c, ymask)),
        ("Mlp", stdit.Mlp(s), (tok,)),
        ("TimestepEmbedder", stdit.TimestepEmbedder(s), (t,)),
        ("CaptionEmbedder", stdit.CaptionEmbedder(s), (y,)),
        ("FinalLayer", stdit.FinalLayer(s), (tok, jnp.zeros((4, c)))),
        ("MotionGuidanceFuser", MotionGuidanceFuser("adanorm", hidden_size=c), (h, f)),
        ("ResnetBlock", motion.ResnetBlock(ext), (jnp.zeros((4, 2, 2, ext.channels)),)),
        ("TrajectoryExtractor", TrajectoryExtractor(ext), (rgb,)),
        ("Tora", Tora(tora_cfg), (jnp.zeros((4, 1, 2, 2, 3)), t, y, rgb)),
        ("ResBlock", vae.ResBlock(8, 4), (jnp.zeros((4, 2, 4, 4, 8)),)),
        ("Encoder", vae.Encoder(v), (video,)),
        ("Decoder", vae.Decoder(v), (jnp.zeros((4, 1, 1, 1, v.latent_channels)),)),
        ("VAE3D", VAE3D(v), (video,)),
        ("TokenTextEncoder", TokenTextEncoder(tc), (ids, mask)),
        *_vae_opensora_examples(),
    ]


def _vae_opensora_examples() -> list[tuple[str, object, tuple]]:
    """sharding_examples() entries of tora/vae_opensora.py (Open-Sora 1.2's VAE), at OpenSoraVAEConfig.tiny()."""
    from tora import vae_opensora

    return vae_opensora.sharding_examples()
