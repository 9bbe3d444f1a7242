"""STDiT3 train-step cost across video shapes: time, peak memory, analytic FLOPs and MFU.

One rectified-flow training step (forward + backward + Open-Sora's AdamW/clip/EMA update, through
`tora.make_train_step` on jaxzoo's runtime) of `tora.STDiT` at several latent shapes (T, H, W), to show how
cost grows with frames and resolution. FLOPs are counted analytically (matmuls and attention, 3x the
forward for a train step, 4x with remat) and checked against XLA's own cost analysis; MFU = analytic
FLOP/s / --peak-tflops. Numbers go to results.json (and the printed table); cost grows linearly in T*H*W
for the matmuls, the attention terms grow faster.

CPU (tiny preset, a few minutes on 2 cores):
    python benchmarks/tora_step.py
    python benchmarks/tora_step.py --smoke --out /tmp/tora_step          # every code path in seconds
GPU (STDiT3-XL/2 dims, bf16, 51 frames at 480p -> 15 x 60 x 106 latents; H100/H200 bf16 peak 989 TFLOP/s):
    python benchmarks/tora_step.py --preset xl --dtype bfloat16 --remat --batch-size 1 \
        --shapes 15x60x106,15x30x53,5x60x106 --caption-len 300 --peak-tflops 989

The peer column is empty: Open-Sora's STDiT3 needs CUDA + colossalai/apex to train, which this machine
lacks; run its `scripts/train.py` with the same bucket on the GPU to fill it in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxzoo
from jaxzoo import script
from tora.config import OPENSORA_OPTIMIZER, FlowConfig, RunConfig, STDiTConfig
from tora.train import init_state, make_train_step


def forward_flops(cfg: STDiTConfig, b: int, t: int, h: int, w: int, ly: int) -> float:
    """Multiply-adds x 2 of one STDiT forward at latents [b, t, h, w]: every matmul and attention product."""
    pt, ph, pw = cfg.patch_size
    tq, s = -(-t // pt), (-(-h // ph)) * (-(-w // pw))
    n, c, m = b * tq * s, cfg.hidden_size, cfg.mlp_dim
    linear = 2 * n * (3 * c * c + c * c + c * c + c * c + 2 * c * m) + 2 * b * ly * c * 2 * c  # qkv proj q proj mlp; kv
    spatial = linear + 4 * b * tq * s * s * c + 4 * n * ly * c  # self-attention per frame + cross-attention
    temporal = linear + 4 * b * s * tq * tq * c + 4 * n * ly * c
    p = pt * ph * pw
    embed = 2 * n * p * cfg.in_channels * c + 2 * n * c * p * cfg.out_channels
    caption = 2 * b * ly * (cfg.caption_channels * c + c * c)
    cond = 2 * b * (256 * c + c * c) * 2 + 2 * b * c * 6 * c
    return cfg.depth * (spatial + temporal) + embed + caption + cond


def main():
    p = script.parser(__doc__)
    p.add_argument("--preset", choices=["tiny", "xl"], default="tiny")
    p.add_argument("--shapes", default="1x8x8,4x8x8,4x16x16,8x16x16", help="latent T x H x W list")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--caption-len", type=int, default=8)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--remat", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (0 = not reported)")
    args = script.parse(
        p,
        smoke={"shapes": "1x4x4,2x4x4", "repeats": 1, "batch_size": 2, "preset": "tiny", "caption_len": 8},
        # one H200: STDiT3-XL/2 in bf16 with remat at 240p buckets (5 and 15 latent frames)
        accelerator={"preset": "xl", "dtype": "bfloat16", "remat": True, "batch_size": 1,
                     "shapes": "5x30x53,15x30x53", "caption_len": 300, "repeats": 3},
    )
    if not args.peak_tflops:  # the device's listed peak, when it has one (not on CPUs)
        args.peak_tflops = (jaxzoo.flops.peak_flops() or 0.0) / 1e12
    run = script.setup(args)

    base = STDiTConfig.xl() if args.preset == "xl" else STDiTConfig.tiny()
    cfg = base.replace(precision=jaxzoo.Precision.of(args.dtype), remat=args.remat)
    if args.smoke:
        cfg = cfg.replace(depth=1)
    train_cfg = RunConfig(model=cfg, flow=FlowConfig(), optimizer=OPENSORA_OPTIMIZER.replace(warmup_steps=0),
                          steps=1000, batch_size=args.batch_size, seed=args.seed)
    mesh = run.mesh if args.mesh else None
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    b, ly = args.batch_size, args.caption_len
    key = run.rng
    y = jax.random.normal(key, (b, ly, cfg.caption_channels))
    plan = init_state(train_cfg, key, mesh=mesh)
    n_params = jaxzoo.param_count(plan.state.params)
    rows = []
    for t, h, w in shapes:
        state = jax.tree.map(jnp.copy, plan.state)  # the step donates its input
        step = make_train_step(train_cfg, mesh=mesh, state_sharding=plan.shardings)
        batch = {"x": jax.random.normal(key, (b, t, h, w, cfg.in_channels)), "y": y}
        if mesh is not None:
            batch = jaxzoo.shard_batch(batch, mesh)
        peak = xla_flops = None
        if mesh is None:  # AOT analysis of the jitted step
            compiled = step.__wrapped__.lower(state, batch, key).compile()
            mem = compiled.memory_analysis()
            if mem is not None:
                peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**20
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            xla_flops = float(cost.get("flops", float("nan"))) if cost else None
        holder = {"state": state}

        def one(holder=holder, step=step, batch=batch):
            holder["state"], m = step(holder["state"], batch, key)
            return m

        sec = script.timeit(one, warmup=1, repeats=args.repeats)
        flops = forward_flops(cfg, b, t, h, w, ly) * (4 if args.remat else 3)
        rows.append({
            "workload": f"B={b} T={t} {h}x{w}",
            "ours ms/step": sec * 1e3,
            "peer (Open-Sora)": "n/a",
            "ratio": "n/a",
            "GFLOP/step": flops / 1e9,
            "XLA GFLOP": xla_flops / 1e9 if xla_flops is not None else "n/a",
            "GFLOP/s": flops / sec / 1e9,
            "MFU": f"{100 * flops / sec / (args.peak_tflops * 1e12):.1f}%" if args.peak_tflops else "n/a",
            "peak MiB": peak if peak is not None else "n/a",
        })
    m = script.machine()
    script.print_table(rows, title=(
        f"STDiT train step, preset={args.preset} ({n_params / 1e6:.2f}M params), dtype={args.dtype}, "
        f"remat={args.remat}, caption {ly} tokens; machine: {m['device_kind']} x{m['devices']} ({m['backend']})"
    ))
    run.save({"params": n_params, "config": train_cfg.to_dict(), "rows": rows})


if __name__ == "__main__":
    main()
