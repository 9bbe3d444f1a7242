"""STDiT3 train-step cost across video shapes: time, peak memory, analytic FLOPs and MFU.

One rectified-flow training step (forward + backward + AdamW/EMA update, jitted through jaxzoo.train) of
`tora.STDiT` at several latent shapes (T, H, W), to show how cost grows with frames and resolution.
FLOPs are counted analytically (matmuls and attention, 3x the forward for a train step, 4x with remat) and
checked against XLA's own cost analysis; MFU = analytic FLOP/s / --peak-tflops.

CPU (tiny preset, ~2 min on 2 cores):
    python benchmarks/tora_step.py
GPU (STDiT3-XL/2 dims, bf16, 51 frames at 480p -> 15 x 60 x 106 latents; H100/H200 bf16 peak 989 TFLOP/s):
    python benchmarks/tora_step.py --preset xl --dtype bfloat16 --remat --batch 1 \
        --shapes 15x60x106,15x30x53,5x60x106 --caption-len 300 --peak-tflops 989

The peer column is empty: Open-Sora's STDiT3 needs CUDA + colossalai/apex to train, which this machine
lacks; run its `scripts/train.py` with the same bucket on the GPU to fill it in.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--preset", choices=["tiny", "xl"], default="tiny")
parser.add_argument("--shapes", default="1x8x8,4x8x8,4x16x16,8x16x16", help="latent T x H x W list")
parser.add_argument("--batch", type=int, default=2)
parser.add_argument("--caption-len", type=int, default=8)
parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
parser.add_argument("--remat", action="store_true")
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (0 = not reported)")
parser.add_argument("--cpu-devices", type=int, default=1, help="fake CPU devices (XLA flag, CPU only)")
args = parser.parse_args()
if args.cpu_devices > 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.cpu_devices}"
    )

import flax.linen as nn
import jax
import jax.numpy as jnp

from tora.config import FlowConfig, STDiTConfig, TrainConfig
from tora.stdit import STDiT, count_params
from tora.train import create_state, make_stdit_step


def forward_flops(cfg: STDiTConfig, b: int, t: int, h: int, w: int, ly: int) -> float:
    """Multiply-adds x 2 of one STDiT forward at latents [b, t, h, w]: every matmul and attention product."""
    pt, ph, pw = cfg.patch_size
    tq, s = -(-t // pt), (-(-h // ph)) * (-(-w // pw))
    n, c, m = b * tq * s, cfg.hidden_size, cfg.mlp_dim
    linear = (
        2 * n * (3 * c * c + c * c + c * c + c * c + 2 * c * m) + 2 * b * ly * c * 2 * c
    )  # qkv proj q proj mlp; kv
    spatial = linear + 4 * b * tq * s * s * c + 4 * n * ly * c  # self-attention per frame + cross-attention
    temporal = linear + 4 * b * s * tq * tq * c + 4 * n * ly * c
    p = pt * ph * pw
    embed = 2 * n * p * cfg.in_channels * c + 2 * n * c * p * cfg.out_channels
    caption = 2 * b * ly * (cfg.caption_channels * c + c * c)
    cond = 2 * b * (256 * c + c * c) * 2 + 2 * b * c * 6 * c
    return cfg.depth * (spatial + temporal) + embed + caption + cond


def main():
    base = STDiTConfig.xl() if args.preset == "xl" else STDiTConfig.tiny()
    cfg = STDiTConfig(**{**base.__dict__, "dtype": args.dtype, "remat": args.remat})
    model = STDiT(cfg)
    flow = FlowConfig()
    tc = TrainConfig(warmup_steps=0)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    b, ly = args.batch, args.caption_len
    key = jax.random.key(0)
    y = jax.random.normal(key, (b, ly, cfg.caption_channels))
    t0 = shapes[0]
    params = nn.meta.unbox(jax.jit(model.init)(key, jnp.zeros((b, *t0, cfg.in_channels)), jnp.zeros(b), y))[
        "params"
    ]
    n_params = count_params(params)
    dev = jax.devices()[0]
    rows = []
    for t, h, w in shapes:
        state, tx = create_state(params, tc)
        step = make_stdit_step(model, tx, flow, donate=True)
        batch = {"x": jax.random.normal(key, (b, t, h, w, cfg.in_channels)), "y": y}
        compiled = step.lower(state, batch, key).compile()
        mem = compiled.memory_analysis()
        peak = None
        if mem is not None:
            peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**20
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
        state, m = step(state, batch, key)  # warm-up
        jax.block_until_ready(m)
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            state, m = step(state, batch, jax.random.fold_in(key, i))
            jax.block_until_ready((state.params, m))
            times.append(time.perf_counter() - start)
        sec = statistics.median(times)
        flops = forward_flops(cfg, b, t, h, w, ly) * (4 if args.remat else 3)
        mfu = f"{100 * flops / sec / (args.peak_tflops * 1e12):.1f}%" if args.peak_tflops else "n/a"
        rows.append(
            (f"B={b} T={t} {h}x{w}", sec * 1e3, flops / 1e9, xla_flops / 1e9, flops / sec / 1e9, mfu, peak)
        )
    print(
        f"\nSTDiT train step, preset={args.preset} ({n_params / 1e6:.2f}M params), dtype={args.dtype}, "
        f"remat={args.remat}, caption {ly} tokens; machine: {dev.device_kind} x{jax.device_count()} ({jax.devices()})"
    )
    hdr = (
        "workload",
        "ours ms/step",
        "peer (Open-Sora)",
        "ratio",
        "GFLOP/step",
        "XLA GFLOP",
        "GFLOP/s",
        "MFU",
        "peak MiB",
    )
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for name, ms, gf, xgf, gfs, mfu, peak in rows:
        pk = f"{peak:.1f}" if peak is not None else "n/a"
        print(f"| {name} | {ms:.1f} | n/a | n/a | {gf:.3f} | {xgf:.3f} | {gfs:.1f} | {mfu} | {pk} |")


if __name__ == "__main__":
    main()
