"""sae: sparse autoencoders in JAX/Flax (ReLU-L1, Gated, TopK, BatchTopK, JumpReLU), trained with jaxzoo.

    import sae
    cfg = sae.SAEConfig(d_in=256, d_sae=2048, architecture="topk", k=32)
    params, history = sae.train(cfg, activations, steps=2000, batch_size=4096)
    report = sae.evaluate(cfg, params, held_out)

A run as one config (saved by ``train(workdir=...)``; ``jaxzoo.rebuild(workdir)`` rebuilds it)::

    run = sae.RunConfig(model=cfg, optimizer=sae.default_optimizer(cfg, 1e-3), steps=2000, batch_size=4096)
    params, history = sae.train(run, activations, workdir="runs/topk")

Pieces: ``init_state(run, rng, sample=..., mesh=...)`` (a ``jaxzoo.StatePlan``), ``make_optimizer(run)``,
``make_train_step(run, mesh=...)``, ``final_params(state, cfg)``.
"""

from sae import ops, toy
from sae.activations import ActivationStore, ablate, capture, patched, read_intermediate, splice, steer
from sae.config import ARCHITECTURES, RunConfig, SAEConfig, default_optimizer
from sae.flops import flops_per_example
from sae.interop import load_gemmascope, load_saelens, save_gemmascope, save_saelens
from sae.losses import sae_loss
from sae.metrics import evaluate, score_recovered
from sae.model import SAE, apply, decoder_directions, init_params, sharding_examples
from sae.training import (
    final_params,
    fold_scale,
    init_state,
    make_loss_fn,
    make_optimizer,
    make_train_step,
    run_config,
    train,
)

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "ActivationStore",
    "RunConfig",
    "SAEConfig",
    "ablate",
    "apply",
    "capture",
    "decoder_directions",
    "default_optimizer",
    "evaluate",
    "final_params",
    "flops_per_example",
    "fold_scale",
    "init_params",
    "init_state",
    "load_gemmascope",
    "load_saelens",
    "make_loss_fn",
    "make_optimizer",
    "make_train_step",
    "ops",
    "patched",
    "read_intermediate",
    "run_config",
    "sae_loss",
    "save_gemmascope",
    "save_saelens",
    "score_recovered",
    "sharding_examples",
    "splice",
    "steer",
    "toy",
    "train",
]
