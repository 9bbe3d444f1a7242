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

Long-video memory (`--memory`, no device needed): per-device bytes of one training step of STDiT3-XL/2
(bf16 compute, float32 parameters + Adam moments + EMA, batch 1, 300 caption tokens, scan over the 28
block pairs) from XLA's memory analysis of the compiled step (`jax.jit(step).lower(abstract state from
plan_state(abstract_only=True), jax.ShapeDtypeStruct batch).compile().memory_analysis()`: arguments +
outputs - donated + temporaries), compiled by XLA:CPU on this host's fake CPU devices; "8 dev" is a
(data=1, model=8) mesh with `shard_sequence=True` (tokens' H' axis over "model", heads and MLP too). Each
setting is compiled at three clips (240p x 51, 240p x 204, 480p x 102 frames; marked *) and the rest is
a least-squares fit peak = a + b N + c T' S^2 (N tokens, S patches per frame: the XLA attention keeps S^2
scores); rows marked (2) had only the two 240p points (no S^2 term: their 480p values are lower bounds).
Past 408 frames the "fits" columns are extrapolations. XLA:CPU is not XLA:GPU (no flash attention: a
fused kernel removes the S^2 scores, so GPU peaks at 480p should be lower); run the same flags on the GPU
host for its own numbers. Measured 2026-12-02 on a loaded 2-core host (compile times only, the bytes do not depend on load);
results/tora_step.json holds the measured rows and the fit; the none x 8 devices setting was not compiled in time.

| remat | devices | res | 51 fr GB | 102 fr GB | 204 fr GB | 408 fr GB | longest clip in 80 GB | in 141 GB |
|---|---|---|---|---|---|---|---|---|
| none (2) | 1 | 240p | 127.6* | 227.5 | 427.2* | 826.7 | 17 | 51 |
| dots | 1 | 240p | 45.5* | 66.5 | 108.6* | 192.9 | 119 | 272 |
| dots (2) | 8 | 240p | 8.9* | 14.4 | 25.6* | 47.8 | 697 | 1258 |
| block | 1 | 240p | 29.0* | 33.1 | 41.2* | 57.6 | 680 | 1445 |
| block | 8 | 240p | 3.9* | 4.5 | 5.7* | 8.1 | > 408 | > 408 |
| none (2) | 1 | 480p | >= 420 | >= 812 | >= 1596 | >= 3165 | 0 | 0 |
| dots | 1 | 480p | 114.8 | 205.3* | 386.1 | 747.9 | 17 | 51 |
| dots (2) | 8 | 480p | >= 25 | >= 47 | >= 91 | >= 178 | <= 170 | <= 306 |
| block | 1 | 480p | 46.4 | 68.0* | 111.2 | 197.5 | 119 | 272 |
| block | 8 | 480p | 8.4 | 13.6* | 23.9 | 44.4 | 748 | 1360 |

So: without remat a 51-frame 240p clip does not fit 80 GB (XLA keeps every block's attention and MLP
activations, in float32 where it upcasts); keeping only the weight-matmul outputs ("dots") fits 240p
clips up to about 119 frames; recomputing each block ("block") fits 680 frames at 240p and 119 at 480p on
one 80 GB device, and sharding the sequence (with the weights) over 8 devices cuts the per-device peak by
about 7x (748 frames at 480p in 80 GB). "block" is `STDiTConfig.remat`'s default; with a "model" mesh
axis also set `shard_sequence=True` for long clips.

The peer column is empty: Open-Sora's STDiT3 needs CUDA + colossalai/apex to train, which this machine
lacks; run its `scripts/train.py` with the same bucket on the GPU to fill it in.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

import jaxzoo
import tora
from jaxzoo import script
from tora.config import OPENSORA_OPTIMIZER, REMAT_POLICIES, FlowConfig, RunConfig, STDiTConfig
from tora.train import init_state, make_train_step, recipe

# Open-Sora 1.2 buckets: pixel (height, width) -> VAE 1.2 latents (x8 in space, 17 frames -> 5 latents)
RESOLUTIONS = {"240p": (240, 426), "480p": (480, 854), "720p": (720, 1280)}
GB = 1e9


def latent_shape(res: str, frames: int) -> tuple[int, int, int]:
    """(T, H, W) latents of an Open-Sora 1.2 bucket: SD-VAE 1/8 in space (three stride-2 convs with (0, 1)
    padding: 426 -> 53, 854 -> 106) and 17 frames -> 5 latents (the temporal VAE on 17-frame pieces)."""
    h, w = RESOLUTIONS[res]
    return frames // 17 * 5 + (-(-(frames % 17) // 4) if frames % 17 else 0), h // 2 // 2 // 2, w // 2 // 2 // 2


def step_memory(cfg: STDiTConfig, latents: tuple[int, int, int], *, devices: int = 1, caption_len: int = 300,
                batch: int = 1) -> dict:
    """Per-device bytes of one compiled training step from XLA's memory analysis (nothing is allocated).

    The state is `plan_state(..., abstract_only=True)` (float32 parameters, Adam moments, EMA); the batch is
    a `jax.ShapeDtypeStruct`. With devices > 1 the step is compiled for a (data=1, model=devices) mesh of
    this host's (fake) CPU devices with `shard_sequence=True`: heads and MLP split over "model" (jaxzoo's
    rules) and the tokens' H' axis too. Peak = arguments + outputs - aliased (donated state) + temporaries.
    """
    mesh = None
    if devices > 1:
        mesh = jaxzoo.make_mesh({"data": 1, "model": devices}, devices=jax.devices()[:devices])
        cfg = cfg.replace(shard_sequence=True)
    run = RunConfig(model=cfg, flow=FlowConfig(), optimizer=OPENSORA_OPTIMIZER, steps=1000, batch_size=batch)
    r = recipe(run)
    plan = jaxzoo.plan_state(r.init_fn, r.tx, jax.random.key(0), mesh=mesh, rules=r.rules, extra=r.extra,
                             abstract_only=True)
    t, h, w = latents
    sh = {} if mesh is None else {"sharding": NamedSharding(mesh, PartitionSpec())}
    batch_in = {"x": jax.ShapeDtypeStruct((batch, t, h, w, cfg.in_channels), jnp.float32, **sh),
                "y": jax.ShapeDtypeStruct((batch, caption_len, cfg.caption_channels), jnp.float32, **sh)}
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, **sh)
    step = make_train_step(run).__wrapped__  # the jitted step; shardings come from the abstract inputs
    # buffer assignment (what memory_analysis reports) comes before code generation: skip LLVM's
    # optimisation passes, which dominate XLA:CPU's compile time
    opts = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    if mesh is None:
        compiled = step.lower(plan.abstract, batch_in, rng).compile(opts)
    else:
        with jax.set_mesh(mesh), nn.logical_axis_rules(jaxzoo.rules_for_mesh(r.rules, mesh)):
            compiled = step.lower(plan.abstract, batch_in, rng).compile(opts)
    m = compiled.memory_analysis()
    peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    return {"state_GB": m.argument_size_in_bytes / GB, "temp_GB": m.temp_size_in_bytes / GB, "peak_GB": peak / GB}


def _features(cfg: STDiTConfig, lat: tuple[int, int, int]) -> list[float]:
    """Regressors of the memory model: 1, tokens N = T' S, and the spatial-attention scores T' S^2."""
    _, ph, pw = cfg.patch_size
    t, s = lat[0], (-(-lat[1] // ph)) * (-(-lat[2] // pw))
    return [1.0, t * s / 1e6, t * s * s / 1e9]


def memory_table(args) -> tuple[list[dict], list[dict], list[dict]]:
    """Measured rows (XLA memory analysis) per (remat, devices, point); per setting a fit peak = a + b N +
    c T' S^2 through the points (exact for three), its predicted peak at every (resolution, frames) of the
    table, and the longest clip (multiple of 17 frames) that fits 80 and 141 GB per device."""
    base = STDiTConfig.xl() if args.memory_preset == "xl" else STDiTConfig.tiny()
    base = base.replace(precision=jaxzoo.Precision.of(args.memory_dtype), scan=True)
    points = [(p.split(":")[0], int(p.split(":")[1])) for p in args.memory_points.split(",")]
    table_frames = [int(f) for f in args.memory_frames.split(",")]
    rows, table, fits = [], [], []
    for remat_policy in args.memory_remat.split(","):
        for devices in [int(d) for d in args.memory_devices.split(",")]:
            if devices > jax.device_count():
                print(f"skipping {devices} devices: only {jax.device_count()} (pass --cpu-devices {devices})")
                continue
            cfg = base.replace(remat=remat_policy)
            xs, ys = [], []
            for res, f in points:
                lat = latent_shape(res, f)
                mem = step_memory(cfg, lat, devices=devices, caption_len=args.memory_caption_len)
                xs.append(_features(cfg, lat))
                ys.append(mem["peak_GB"])
                rows.append({"res": res, "frames": f, "latents": "x".join(map(str, lat)), "remat": remat_policy,
                             "devices": devices, **mem})
                print(rows[-1], flush=True)
            coef = np.linalg.lstsq(np.array(xs), np.array(ys), rcond=None)[0]
            predict = lambda res, f, coef=coef, cfg=cfg: float(np.dot(_features(cfg, latent_shape(res, f)), coef))
            setting = {"remat": remat_policy, "devices": devices, "sequence sharding": "model" if devices > 1 else "-"}
            for res in args.memory_res.split(","):
                table.append({**setting, "res": res,
                              **{f"{f} fr GB": predict(res, f) for f in table_frames}})
                fit = {}
                for budget in (80.0, 141.0):
                    f = 0
                    while f < 17 * 400 and predict(res, f + 17) <= budget:
                        f += 17
                    fit[f"fits {budget:.0f} GB"] = f
                fits.append({**setting, "res": res, **fit})
    return rows, table, fits


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
    p.add_argument("--memory", action="store_true", help="also the long-video memory table (XLA memory analysis)")
    p.add_argument("--memory-preset", choices=["tiny", "xl"], default="xl")
    p.add_argument("--memory-dtype", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--memory-res", default="240p,480p", help=f"buckets among {list(RESOLUTIONS)}")
    p.add_argument("--memory-frames", default="51,102,204,408", help="frame counts of the table (predicted)")
    p.add_argument("--memory-points", default="240p:51,240p:204,480p:102",
                   help="res:frames compiled per setting (three fix the memory model exactly)")
    p.add_argument("--memory-remat", default=",".join(REMAT_POLICIES), help="remat policies to compare")
    p.add_argument("--memory-devices", default="1,8", help="devices of the model axis (1 = no sharding)")
    p.add_argument("--memory-caption-len", type=int, default=300)
    p.add_argument("--skip-timing", action="store_true", help="only the memory table")
    args = script.parse(
        p,
        smoke={"shapes": "1x4x4,2x4x4", "repeats": 1, "batch_size": 2, "preset": "tiny", "caption_len": 8,
               "memory": True, "memory_preset": "tiny", "memory_res": "240p", "memory_frames": "17,34",
               "memory_points": "240p:17", "memory_remat": "block", "memory_devices": "1,2", "memory_caption_len": 8,
               "cpu_devices": 2},
        # one H200: STDiT3-XL/2 in bf16 with remat at 240p buckets (5 and 15 latent frames)
        accelerator={"preset": "xl", "dtype": "bfloat16", "remat": True, "batch_size": 1,
                     "shapes": "5x30x53,15x30x53", "caption_len": 300, "repeats": 3},
    )
    run = script.setup(args)
    if not args.peak_tflops:  # the device's listed peak, when it has one (not on CPUs)
        args.peak_tflops = (jaxzoo.flops.peak_flops() or 0.0) / 1e12

    results = {}
    if args.memory:
        mem_rows, table, fits = memory_table(args)
        script.print_table(mem_rows, title=f"measured per-device step memory, {args.memory_preset} {args.memory_dtype}")
        script.print_table(table, title="per-device peak GB (fit through the measured points)")
        script.print_table(fits, title="longest clip (frames) whose training step fits per device")
        results["memory"] = {"measured": mem_rows, "table": table, "largest_clip": fits,
                             "preset": args.memory_preset, "dtype": args.memory_dtype,
                             "caption_len": args.memory_caption_len}
    if args.skip_timing:
        run.save(results)
        return
    base = STDiTConfig.xl() if args.preset == "xl" else STDiTConfig.tiny()
    cfg = base.replace(precision=jaxzoo.Precision.of(args.dtype), remat="block" if args.remat else "none")
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
        # tora.flops_per_example: 3x the forward; remat recomputes the forward once more
        flops = b * tora.forward_flops(cfg, (t, h, w), ly) * (4 if args.remat else 3)
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
    run.save({**results, "params": n_params, "config": train_cfg.to_dict(), "rows": rows})


if __name__ == "__main__":
    main()
