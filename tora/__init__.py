"""tora: Tora (Zhang et al., CVPR 2025, arXiv 2407.21705) on an Open-Sora 1.2 STDiT3 backbone.

Part 1: the ST-DiT backbone (`STDiT`), rectified flow (`tora.flow`), the Euler sampler (`make_sampler`),
the causal 3D VAE (`VAE3D`), text conditioning and training. Part 2 adds the trajectory extractor and the
motion-guidance fuser.
"""

from tora import ops
from tora.config import FlowConfig, STDiTConfig, TrainConfig, VAEConfig
from tora.flow import latent_shift_ratio, make_loss_fn, sample_t, training_inputs
from tora.sample import euler_timesteps, make_sampler
from tora.stdit import SpatialBlock, STDiT, STDiTBlock, TemporalBlock, count_params
from tora.text import TextConfig, TokenTextEncoder, tokenize
from tora.train import create_state, ema_params, ema_weights, make_optimizer, make_stdit_step, make_vae_step
from tora.vae import VAE3D, kl_divergence, make_vae_loss_fn

__all__ = [
    "FlowConfig",
    "STDiTConfig",
    "TrainConfig",
    "VAEConfig",
    "TextConfig",
    "STDiT",
    "STDiTBlock",
    "SpatialBlock",
    "TemporalBlock",
    "VAE3D",
    "TokenTextEncoder",
    "count_params",
    "create_state",
    "ema_params",
    "ema_weights",
    "euler_timesteps",
    "kl_divergence",
    "latent_shift_ratio",
    "make_loss_fn",
    "make_optimizer",
    "make_sampler",
    "make_stdit_step",
    "make_vae_loss_fn",
    "make_vae_step",
    "ops",
    "sample_t",
    "tokenize",
    "training_inputs",
]

# --- part 2: motion control (trajectory extractor, motion-guidance fuser, Tora model) ---
from tora.motion import (
    FUSER_VARIANTS,
    MotionGuidanceFuser,
    TrajectoryExtractor,
    TrajectoryExtractorConfig,
)
from tora.tora_model import (
    Tora,
    ToraConfig,
    load_base_params,
    make_tora_loss_fn,
    make_tora_sampler,
    masked_optimizer,
    motion_condition,
    motion_features,
    trainable_mask,
)
from tora.trajectory import (
    flow_to_rgb,
    resample_trajectory,
    sample_sparse_tracks,
    splat_and_blur,
    track_centroids,
    trajectory_error,
    trajectory_to_flow,
)

__all__ += [
    "FUSER_VARIANTS",
    "MotionGuidanceFuser",
    "Tora",
    "ToraConfig",
    "TrajectoryExtractor",
    "TrajectoryExtractorConfig",
    "flow_to_rgb",
    "load_base_params",
    "make_tora_loss_fn",
    "make_tora_sampler",
    "masked_optimizer",
    "motion_condition",
    "motion_features",
    "resample_trajectory",
    "sample_sparse_tracks",
    "splat_and_blur",
    "track_centroids",
    "trainable_mask",
    "trajectory_error",
    "trajectory_to_flow",
]
