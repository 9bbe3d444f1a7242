"""tora: Tora (Zhang et al., CVPR 2025, arXiv 2407.21705) on an Open-Sora 1.2 STDiT3 backbone.

Part 1: the ST-DiT backbone (`STDiT`), rectified flow (`flow`), the Euler sampler (`sample`), the causal
3D VAE (`VAE3D`), text conditioning and training. Part 2 adds the trajectory extractor and motion fuser.
"""

from tora import ops
from tora.config import FlowConfig, STDiTConfig, TrainConfig, VAEConfig
from tora.stdit import SpatialBlock, STDiT, STDiTBlock, TemporalBlock, count_params

__all__ = [
    "FlowConfig",
    "STDiTConfig",
    "TrainConfig",
    "VAEConfig",
    "STDiT",
    "STDiTBlock",
    "SpatialBlock",
    "TemporalBlock",
    "count_params",
    "ops",
]
