"""sae: sparse autoencoders in JAX/Flax (ReLU-L1, Gated, TopK, BatchTopK, JumpReLU), trained with jaxzoo.

import sae
cfg = sae.SAEConfig(d_in=256, d_sae=2048, architecture="topk", k=32)
params, history = sae.train(cfg, activations, steps=2000, batch_size=4096)
report = sae.evaluate(cfg, params, held_out)
"""

from sae import ops, toy
from sae.activations import ActivationStore, ablate, capture, patched, read_intermediate, splice, steer
from sae.config import ARCHITECTURES, SAEConfig
from sae.interop import load_gemmascope, load_saelens, save_gemmascope, save_saelens
from sae.losses import sae_loss
from sae.metrics import evaluate, score_recovered
from sae.model import SAE, apply, decoder_directions, init_params
from sae.training import fold_scale, make_loss_fn, make_optimizer, make_step, train

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "ActivationStore",
    "SAEConfig",
    "ablate",
    "apply",
    "capture",
    "decoder_directions",
    "evaluate",
    "fold_scale",
    "init_params",
    "load_gemmascope",
    "load_saelens",
    "make_loss_fn",
    "make_optimizer",
    "make_step",
    "ops",
    "patched",
    "read_intermediate",
    "sae_loss",
    "save_gemmascope",
    "save_saelens",
    "score_recovered",
    "splice",
    "steer",
    "toy",
    "train",
]
