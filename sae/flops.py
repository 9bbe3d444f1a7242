"""Analytic training FLOPs of an SAE step, per activation (token), for ``jaxzoo.fit``'s throughput logging."""

from __future__ import annotations

from sae.config import RunConfig, SAEConfig


def flops_per_example(config: SAEConfig | RunConfig) -> float:
    """Training FLOPs per activation row (forward + backward), counting a multiply-add as 2 FLOPs and only
    the matrix products (elementwise work, top-k selection and the optimiser are left out).

    With d = d_in, m = d_sae:
      - relu, jumprelu, batchtopk: encoder 2dm + decoder 2md forward, training 3x: 12 d m;
      - matryoshka: as batchtopk plus the prefix decodes 2 m_l d of each inner level, times 3;
      - gated: two encoder products (gate, magnitude) 4dm, the decoder 2md and the aux decode 2md forward,
        times 3: 24 d m;
      - topk: what our step runs, the dense encoder product 2dm forward only (its backward touches the k
        chosen columns: 2kd for W_enc), the sparse decode 2kd forward and 4kd backward: 2 d m + 8 k d.
        AuxK's extra sparse work (k_aux d per product) runs only while latents are dead and is not counted.
    """
    cfg = config.model if isinstance(config, RunConfig) else config
    if not isinstance(cfg, SAEConfig):
        raise ValueError(
            f"flops_per_example expects a sae.SAEConfig or sae.RunConfig; got {type(config).__name__}."
        )
    d, m = cfg.d_in, cfg.d_sae
    if cfg.architecture == "topk":
        return float(2 * d * m + 8 * cfg.k * d)
    if cfg.architecture == "gated":
        return float(3 * 8 * d * m)
    forward = 4 * d * m
    if cfg.architecture == "matryoshka":
        forward += sum(2 * w * d for w in cfg.levels[:-1])
    return float(3 * forward)
