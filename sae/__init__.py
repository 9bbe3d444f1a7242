"""sae: sparse autoencoders in JAX/Flax (ReLU-L1, Gated, TopK, BatchTopK, JumpReLU), trained with jaxzoo.

import sae
cfg = sae.SAEConfig(d_in=256, d_sae=2048, architecture="topk", k=32)
params, history = sae.train(cfg, activations, steps=2000, batch_size=4096)
report = sae.evaluate(cfg, params, held_out)
"""

from sae import ops, toy
from sae.config import ARCHITECTURES, SAEConfig
from sae.losses import sae_loss
from sae.model import SAE, apply, decoder_directions, init_params
from sae.train import fold_scale, make_loss_fn, make_optimizer, make_step, train

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "SAEConfig",
    "apply",
    "decoder_directions",
    "fold_scale",
    "init_params",
    "make_loss_fn",
    "make_optimizer",
    "make_step",
    "ops",
    "sae_loss",
    "toy",
    "train",
]
