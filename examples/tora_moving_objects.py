"""Tora on moving objects: does a trajectory condition make a tiny ST-DiT follow the path?

What it does
  1. Trains a tiny pixel-space ST-DiT (no VAE; 2 block pairs of width 64) on synthetic clips of one or two
     coloured shapes moving along random straight or curved paths, conditioned on captions such as
     "a red square" (the base model, no motion). The training clips (videos, flows, captions) are written
     once to disk shards in --out and streamed from there (`jaxzoo.data`; a resumed run continues the
     stream where its checkpoint left it).
  2. For each motion-guidance fuser (AdaNorm, extra channel, cross-attention), copies the base weights
     into a Tora model and trains only the trajectory extractor and the fusers (backbone frozen, as in the
     paper): stage 1 on the exact dense flow, stage 2 on 1..4 sparse tracks sampled from it.
  3. Generates videos for held-out single-object trajectories (the blurred sparse flow map of the target
     track, coloured and fed to the extractor; the motion goes into both CFG passes), tracks the object
     with an intensity-weighted centroid of its caption colour, and reports TrajError (mean L1 distance
     in pixels between the generated and the given track) for no motion conditioning and for each
     fuser after each stage, like the paper's Tables 1 and 3. Also writes a PNG strip of generated
     frames with the target path drawn, and results.json.

Seeds, shape metric, EMA
  Every phase runs once per seed (--seeds, default 0,1) and the table gives mean +- std over seeds. Samples
  use the EMA of the weights (--ema-decay); the base run warms up and decays with a cosine. Besides
  TrajError over all clips the table reports the shape metric: the fraction of generated frames holding
  exactly one blob of the caption colour whose size is within 0.5x-1.5x the real object's (`shape_ok`),
  the clips whose every frame passes, TrajError on those clips only, and TrajError on the passing frames
  only (on blotches TrajError measures a centroid of noise). "fuser out rms" is the size of each fuser's zero-initialised output layer after
  training: how far it moved from the identity.

  --fusers takes "name" or "name@lr": the cross-attention fuser starts as the identity through a zero
  output projection, so its query/key/value weights get exactly zero gradient until that projection has
  grown, and its keys carry no position (the motion features are local conv features, so a query must
  learn to find its own location among the frame's keys): at the shared learning rate and a few hundred
  steps it has barely moved from the identity. "cross_attention@5e-3" runs it with a larger rate.

Run
  python examples/tora_moving_objects.py                  # CPU defaults (2 seeds, ~40 min on a quiet 2-core CPU)
  python examples/tora_moving_objects.py --smoke --out /tmp/tora   # every code path, tiny sizes
  python examples/tora_moving_objects.py --base-steps 4000 --stage-steps 2000 --size 32 --frames 16 \
      --eval-clips 64 --hidden 64 --depth 4 --seeds 0,1,2     # GPU scale

Every training phase is a `tora.train` run checkpointed under the output folder
(<out>/base-<config-hash>/, <out>/tora-<fuser>-<config-hash>/, the seed is in the config), so a rerun with
the same flags skips what is done and only re-evaluates; two processes with --seeds 0 and --seeds 1 and
the same --out can train in parallel, and a last run with --seeds 0,1 gathers both. With several devices
(--cpu-devices 4, or a GPU host) the batch is split over the mesh's "data" axis.

Results (per seed and mean +- std: TrajError, shape metric, losses, fuser growth, timings) go to
results.json and strip.png (first seed) in the output folder; each stage's samples are stored in its
workdir, so a gathering rerun reports stage 1 from its own samples and not from the stage-2 checkpoint.

Measured (the defaults: base 3000 steps, ~10 min per seed on one quiet core; 300 steps per stage; seeds
0 and 1, one process per seed; 16 held-out single-object clips; mean ± std over the two seeds, in pixels
on 16x16 frames; real clips: TrajError 0.01 px, shape ok 1.00):

| method | stage | TrajError | shape ok (frames) | TrajError on passing frames | per seed |
|---|---|---|---|---|---|
| ST-DiT, no motion | - | 4.26 ± 0.29 | 0.45 ± 0.17 | 3.98 ± 0.77 | 4.46 / 4.05 |
| Tora, AdaNorm | 1: dense flow | 2.00 ± 0.53 | 0.50 ± 0.36 | 1.52 ± 0.20 | 1.63 / 2.38 |
| Tora, AdaNorm | 2: + sparse tracks | 2.55 ± 0.27 | 0.56 ± 0.17 | 2.13 ± 0.03 | 2.36 / 2.74 |
| Tora, extra channel | 1 | 2.15 ± 0.72 | 0.44 ± 0.44 | 1.37 ± 0.05 | 1.64 / 2.66 |
| Tora, extra channel | 2 | 2.54 ± 0.17 | 0.47 ± 0.23 | 1.91 ± 0.15 | 2.42 / 2.66 |
| Tora, cross-attention | 1 | 4.13 ± 0.10 | 0.45 ± 0.22 | 3.75 ± 0.64 | 4.20 / 4.06 |
| Tora, cross-attention | 2 | 3.81 ± 0.12 | 0.45 ± 0.20 | 3.82 ± 0.08 | 3.72 / 3.90 |
| Tora, cross-attention @ lr 5e-3 | 1 | 4.07 ± 0.11 | 0.45 ± 0.20 | 3.79 ± 0.64 | 4.15 / 4.00 |
| Tora, cross-attention @ lr 5e-3 | 2 | 4.05 ± 0.14 | 0.45 ± 0.22 | 3.55 ± 0.52 | 4.15 / 3.95 |

Clips whose every frame passes the shape metric: 0-3 of 16 (AdaNorm stage 1: 3 on seed 0, TrajError 1.13
px on them); the base of width 64 trained 3000 steps makes single discs in 45% of frames (the previous
width-32, 600-step default: under 1%), so TrajError now follows an object rather than noise, but whole
clips rarely pass and "TrajError passing" rests on 0-3 clips.

Stated plainly: AdaNorm and the extra-channel fuser halve TrajError against no motion after stage 1
(on the frames where an object is found: 1.5 and 1.4 px against 4.0), the two within each other's spread
(the paper's Table 3 ranks AdaNorm ahead, 14.25 vs 21.07; two seeds cannot order them here). Cross-attention hardly moves (3.8-4.1 px at
either learning rate): its output projection starts at zero, so query, key and value weights get no
gradient until it has grown, and its keys carry no position, so a query can only find the motion patch of
its own location by content; the paper also ranks it behind AdaNorm (18.36 vs 14.25). Stage 2 (sparse
tracks) does not improve on stage 1 here, unlike the paper's Table "dense only 39.34 / hybrid 14.25":
the discs are ~5 px wide, so the blurred single-track map the evaluation feeds is already close to the
dense flow of a disc that stage 1 trained on, while stage 2's tracks start on a grid point anywhere on
(or beside) a moving object, sometimes the second object of a two-object clip. Two seeds: the spread
between seeds (0.3-0.7 px) is as large as the fuser differences except against cross-attention and no
motion.
"""

from __future__ import annotations

import hashlib
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxzoo
import tora
from jaxzoo import script
from tora.config import FlowConfig, RunConfig, STDiTConfig, ToraConfig, TrajectoryExtractorConfig
from tora.sample import make_sampler
from tora.stdit import STDiT
from tora.synthetic import BACKGROUND, caption_features, make_batch
from tora.tora_model import Tora, load_base_params, make_tora_sampler
from tora.trajectory import flow_to_rgb, track_centroids, trajectory_error, trajectory_to_flow

CAPTION_DIM = 16
STAGES = {1: "1: dense flow", 2: "2: + sparse tracks"}


def parse_args(argv=None):
    p = script.parser(__doc__)
    p.add_argument("--frames", type=int, default=8, help="frames per clip")
    p.add_argument("--size", type=int, default=16, help="frame height = width in pixels (multiple of 2)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per training step")
    p.add_argument("--hidden", type=int, default=64, help="ST-DiT width")
    p.add_argument("--depth", type=int, default=2, help="ST-DiT block pairs (= extractor levels)")
    p.add_argument("--motion-channels", type=int, default=16, help="extractor width")
    p.add_argument("--base-steps", type=int, default=3000, help="training steps of the base ST-DiT")
    p.add_argument("--stage-steps", type=int, default=300, help="steps of each Tora stage (dense, sparse)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (base and Tora)")
    p.add_argument("--fusers", default="adanorm,channel,cross_attention,cross_attention@5e-3",
                   help="comma-separated fusers, each \"name\" or \"name@lr\"")
    p.add_argument("--sigma", type=float, default=1.5, help="blur of sparse trajectory maps (pixels)")
    p.add_argument("--kernel-size", type=int, default=7, help="blur kernel (odd)")
    p.add_argument("--max-tracks", type=int, default=4, help="stage 2: up to this many sparse tracks")
    p.add_argument("--track-stride", type=int, default=2, help="stage 2: grid stride of track starts")
    p.add_argument("--eval-clips", type=int, default=16, help="held-out clips for TrajError")
    p.add_argument("--sample-steps", type=int, default=12, help="Euler steps when generating")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale (text)")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (each trains base and fusers)")
    p.add_argument("--ema-decay", type=float, default=0.99, help="EMA of the weights; samples use the EMA")
    p.add_argument("--warmup", type=int, default=50, help="base: warm-up steps before the cosine decay")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    smoke = dict(frames=2, size=12, batch_size=4, hidden=16, depth=1, motion_channels=8, base_steps=2, stage_steps=1,
                 fusers="cross_attention@3e-3", eval_clips=2, sample_steps=2, kernel_size=3, no_progress=True,
                 seeds="0", warmup=1)
    return script.parse(p, argv, smoke=smoke)


def stdit_config(a, fuser=None) -> STDiTConfig:
    return STDiTConfig.tiny(
        in_channels=3,
        caption_channels=CAPTION_DIM,
        hidden_size=a.hidden,
        depth=a.depth,
        num_heads=2,
        vae_spatial_factor=1,  # pixel space: the "latent" cell is a pixel
        motion_fuser=fuser,
        motion_channels=a.motion_channels if fuser else 0,
    )


def tora_config(a, fuser) -> ToraConfig:
    ext = TrajectoryExtractorConfig(
        motion_vae=None, channels=a.motion_channels, num_levels=a.depth, num_res_blocks=1
    )
    return ToraConfig(
        stdit=stdit_config(a, fuser),
        extractor=ext,
        sigma=a.sigma,
        kernel_size=a.kernel_size,
        max_tracks=a.max_tracks,
        track_stride=a.track_stride,
    )


def optimizer(a, lr=None, base=False) -> jaxzoo.OptimizerConfig:
    """Adam with a global-norm clip of 1 and an EMA of the weights (samples use the EMA); the base run warms
    up and decays with a cosine to 10%, Tora's stages keep a constant rate."""
    if base:
        return jaxzoo.OptimizerConfig(algorithm="adam", learning_rate=a.lr, grad_clip=1.0, warmup_steps=a.warmup,
                                      schedule="cosine", end_lr_ratio=0.1, ema_decay=a.ema_decay)
    return jaxzoo.OptimizerConfig(algorithm="adam", learning_rate=lr or a.lr, grad_clip=1.0, warmup_steps=0,
                                  ema_decay=a.ema_decay)


def ema_weights(state):
    """The EMA of the trained weights, the raw weights where there is none (Tora's frozen backbone)."""
    ema = jaxzoo.ema_params(state.opt_state)
    masked = lambda e: isinstance(e, optax.MaskedNode)
    return jax.tree.map(lambda p, e: p if masked(e) else e, state.params, ema, is_leaf=masked)


def shape_ok(videos, colors, real, background=BACKGROUND):
    """[N, T] bools: the frame holds exactly one blob of the caption colour (pixels with a colour weight
    > 0.5, 4-connected) whose weight sum is within 0.5x-1.5x that of the object in the real clip."""
    from scipy import ndimage

    def weight(v, c):  # the tracker's per-pixel weight of colour c (1 on it, 0 at the background)
        d = np.linalg.norm(v - c, axis=-1)
        return np.clip(1 - d / max(np.linalg.norm(background - c), 1e-6), 0, 1)

    out = np.zeros(videos.shape[:2], bool)
    for i in range(videos.shape[0]):
        for f in range(videos.shape[1]):
            w = weight(videos[i, f], colors[i])
            area = weight(real[i, f], colors[i]).sum()
            lab, n = ndimage.label(w > 0.5)
            out[i, f] = n == 1 and 0.5 * area <= w.sum() <= 1.5 * area
    return out


def fuser_norm(params, fuser):
    """Root-mean-square of the fusers' zero-initialised output layers (how far they grew from identity)."""
    leaf = {"adanorm": "temporal_kernel", "channel": "fc2", "cross_attention": "proj"}[fuser]
    vals = [np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
            if "motion_fuser" in jax.tree_util.keystr(k) and leaf in jax.tree_util.keystr(k)
            and "kernel" in jax.tree_util.keystr(k)]
    return float(np.sqrt(np.mean(np.concatenate([v.ravel() for v in vals]) ** 2))) if vals else float("nan")


def tag(cfg: RunConfig) -> str:
    return hashlib.sha1(cfg.to_json().encode()).hexdigest()[:8]


def batch_fn(a, seed, stage_from=None):
    """step -> batch; with stage_from, the batch says stage 1 before that step and stage 2 from it."""

    def get(step):
        b = make_batch(seed * 1_000_003 + step, a.batch_size, a.frames, a.size, a.size)
        out = {
            "x": b["video"],
            "y": caption_features(b["tokens"], CAPTION_DIM),
            "y_mask": b["y_mask"],
            "flow": b["flow"],
        }
        if stage_from is not None:
            out["stage"] = np.full((a.batch_size,), 1 if step < stage_from else 2, np.int32)
        return out

    return get


def clip_loader(a, seed, out, steps, stage_from=None):
    """The clips of `steps` training steps (those `batch_fn` draws), written once, in step order, to disk
    shards with `jaxzoo.data.write_array_shards` (videos, flows, caption features and masks) and streamed
    back by a `jaxzoo.data.make_loader` iterator, whose position `fit` checkpoints (so stage 2 resumes
    where stage 1 stopped)."""
    spec = dict(frames=a.frames, size=a.size, batch=a.batch_size, steps=steps, stage_from=stage_from, seed=seed)
    directory = out / f"clips-{hashlib.sha1(json.dumps(spec).encode()).hexdigest()[:8]}"
    if not (directory / "index.json").exists():
        get = batch_fn(a, seed, stage_from)
        jaxzoo.data.write_array_shards(directory, (get(s) for s in range(steps)))
    loader = jaxzoo.data.make_loader(jaxzoo.data.ShardedArrays(directory), batch_size=a.batch_size, seed=seed,
                                     shuffle=False, num_epochs=1)
    return iter(loader)


def eval_set(a, seed):
    return make_batch(10_000_019 + seed, a.eval_clips, a.frames, a.size, a.size, num_objects=1)


def fusers(a) -> list[tuple[str, str, float | None]]:
    """--fusers entries "name" or "name@lr" -> (label, fuser, learning rate or None for --lr)."""
    out = []
    for item in [f for f in a.fusers.split(",") if f]:
        name, _, lr = item.partition("@")
        out.append((item, name, float(lr) if lr else None))
    return out


def run_seed(a, seed, out, mesh, progress):
    """Base + every fuser's two stages for one seed: rows of metrics and the generated clips."""
    flow_cfg = FlowConfig(use_timestep_transform=False, caption_dropout=0.1)
    timings = {}
    t0 = time.time()
    base_run = RunConfig(model=stdit_config(a), flow=flow_cfg, optimizer=optimizer(a, base=True),
                         steps=a.base_steps, batch_size=a.batch_size, seed=seed)
    state, hist = tora.train(base_run, clip_loader(a, seed, out, a.base_steps), mesh=mesh, workdir=out / f"base-{tag(base_run)}",
                             checkpoint_every=200, log_every=25, progress=progress, desc=f"base ST-DiT s{seed}")
    base_params = jax.device_get(state.params)  # the Tora runs start from the trained (not EMA) weights
    base_ema = jax.device_get(ema_weights(state))
    timings["base"] = time.time() - t0

    ev = eval_set(a, seed)
    y_eval = jnp.asarray(caption_features(ev["tokens"], CAPTION_DIM))
    m_eval = jnp.asarray(ev["y_mask"])
    target = ev["tracks"][:, :1]  # [N, 1, T, 2]
    colors = ev["colors"][:, 0]
    kw = dict(num_frames=a.frames, height=a.size, width=a.size, num_steps=a.sample_steps,
              guidance_scale=a.guidance)
    k_sample = jax.random.key(seed + 1)

    def score(videos):
        preds = np.stack([np.asarray(track_centroids(videos[i], ev["colors"][i, :1], BACKGROUND))
                          for i in range(len(videos))])
        ok = shape_ok(videos, colors, ev["video"])  # [N, T]
        per_frame = np.abs(np.asarray(preds) - np.asarray(target)).sum(-1)[:, 0]  # [N, T] L1 px
        per_clip = per_frame.mean(axis=1)
        passed = ok.all(axis=1)
        return {"traj_error": float(trajectory_error(preds, target)), "shape_ok": float(ok.mean()),
                "clips_passing": int(passed.sum()),
                "traj_error_passing": float(per_clip[passed].mean()) if passed.any() else float("nan"),
                "traj_error_ok_frames": float(per_frame[ok].mean()) if ok.any() else float("nan")}, preds

    rows, strips = [], {}
    oracle, _ = score(ev["video"])
    base_sampler = make_sampler(STDiT(base_run.model), flow_cfg)
    vids = np.asarray(base_sampler(base_ema, k_sample, y_eval, m_eval, **kw))
    met, preds = score(vids)
    rows.append({"method": "ST-DiT, no motion", "stage": "-", **met,
                 "final_loss": hist[-1]["loss"] if hist else None})
    strips["no motion"] = (vids, preds)
    print(f"seed {seed} no motion: {met} (real clips: {oracle})")

    # Eval condition: the sparse, blurred flow map of the target track, coloured per clip.
    probe = tora_config(a, "adanorm")
    cond = np.stack([np.asarray(trajectory_to_flow(target[i], a.frames, a.size, a.size, sigma=a.sigma,
                                                   kernel_size=a.kernel_size, padding=probe.blur_padding))
                     for i in range(a.eval_clips)])
    cond_rgb = jax.vmap(lambda f: flow_to_rgb(f, chunk=probe.color_chunk_frames))(jnp.asarray(cond))

    sample_key = hashlib.sha1(json.dumps(kw).encode()).hexdigest()[:8]  # stored samples depend on these
    for label, fuser, lr in fusers(a):
        # One compiled step for both stages: the batch carries the stage (dense before stage_steps).
        tora_run = RunConfig(model=tora_config(a, fuser), flow=flow_cfg, optimizer=optimizer(a, lr),
                             steps=2 * a.stage_steps, batch_size=a.batch_size, seed=seed, stage=None)
        model = Tora(tora_run.model)
        workdir = out / f"tora-{fuser}-{tag(tora_run)}"
        sampler = make_tora_sampler(model, flow_cfg)
        for stage in (1, 2):
            t0 = time.time()
            # the backbone weights of the base run; extractor and fusers from their (zero-output) init
            start = tora.init_state(tora_run).state.params if stage == 1 else None
            params = load_base_params(start, base_params) if start is not None else None
            clips = clip_loader(a, seed, out, 2 * a.stage_steps, stage_from=a.stage_steps)
            state, hist = tora.train(tora_run, clips, mesh=mesh,
                                     workdir=workdir, params=params, num_steps=stage * a.stage_steps,
                                     rng=jax.random.fold_in(jax.random.key(seed), 7), checkpoint_every=100,
                                     log_every=25, progress=progress, desc=f"Tora {label} stage {stage} s{seed}")
            timings[f"{label}-stage{stage}"] = time.time() - t0
            # a rerun finds the workdir at the end of stage 2 (the stage-1 checkpoint is not kept), so each
            # stage's samples are stored when they are made and read back instead of re-sampled
            cache = workdir / f"samples-stage{stage}-{sample_key}.npz"
            row = {"method": f"Tora ({label})", "stage": STAGES[stage]}
            if cache.exists():
                stored = np.load(cache)
                vids, loss, rms = stored["videos"], float(stored["final_loss"]), float(stored["fuser_out_rms"])
            elif int(state.step) != stage * a.stage_steps:
                print(f"seed {seed} Tora {label} stage {stage}: its checkpoint is gone (the workdir is at step "
                      f"{int(state.step)}) and its samples were not stored; reported as NaN (use a new --out)")
                rows.append({**row, **dict.fromkeys(oracle, float("nan")), "final_loss": None,
                             "fuser_out_rms": float("nan")})
                continue
            else:
                variables = {"params": ema_weights(state), "batch_stats": state.extra["batch_stats"]}
                vids = np.asarray(sampler(variables, k_sample, y_eval, cond_rgb, m_eval, **kw))
                loss, rms = (hist[-1]["loss"] if hist else float("nan")), fuser_norm(state.params, fuser)
                np.savez(cache, videos=vids, final_loss=loss, fuser_out_rms=rms)
            met, preds = score(vids)
            rows.append({**row, **met, "final_loss": loss, "fuser_out_rms": rms})
            strips[f"{label} s{stage}"] = (vids, preds)
            print(f"seed {seed} Tora {label} stage {stage}: {met}")
    return rows, strips, oracle, ev, target, timings


def summarise(per_seed):
    """mean and std over seeds of each (method, stage) metric."""
    keys = ["traj_error", "traj_error_passing", "traj_error_ok_frames", "shape_ok", "clips_passing", "final_loss",
            "fuser_out_rms"]
    out = []
    for i, row in enumerate(per_seed[0]):
        s = {"method": row["method"], "stage": row["stage"], "seeds": len(per_seed)}
        for k in keys:
            vals = np.array([rows[i].get(k) if rows[i].get(k) is not None else np.nan for rows in per_seed], float)
            ok = vals[~np.isnan(vals)]
            s[k] = float(ok.mean()) if len(ok) else float("nan")
            s[k + "_std"] = float(ok.std(ddof=1)) if len(ok) > 1 else float("nan")
        out.append(s)
    return out


def main():
    a = parse_args()
    run = script.setup(a, name="tora_moving_objects")
    t_start = time.time()
    mesh = run.mesh if jax.device_count() > 1 else None
    seeds = [int(x) for x in a.seeds.split(",")]
    per_seed, timings, oracles = [], {}, []
    for seed in seeds:
        rows, strips, oracle, ev, target, t = run_seed(a, seed, run.out, mesh, not a.no_progress)
        per_seed.append(rows)
        oracles.append(oracle)
        timings[f"seed{seed}"] = t
        if seed == seeds[0]:
            first = (ev, strips, target)
    summary = summarise(per_seed)
    pm = lambda r, k, f=".2f": f"{r[k]:{f}} +- {r[k + '_std']:{f}}"
    script.print_table(
        [{"method": r["method"], "training stage": r["stage"], "TrajError (px)": pm(r, "traj_error"),
          "shape ok (frames)": pm(r, "shape_ok"), "clips passing": pm(r, "clips_passing", ".1f"),
          "TrajError passing (px)": pm(r, "traj_error_passing"),
          "TrajError ok frames (px)": pm(r, "traj_error_ok_frames"), "fuser out rms": pm(r, "fuser_out_rms", ".3f")}
         for r in summary],
        title=f"{a.eval_clips} held-out single-object clips per seed, seeds {seeds} (mean +- std); "
        f"{a.frames} frames of {a.size}x{a.size}; real clips: TrajError {oracles[0]['traj_error']:.3f} px, "
        f"shape ok {oracles[0]['shape_ok']:.2f}",
    )
    timings["total"] = time.time() - t_start
    ev, strips, target = first
    run.save({"summary": summary, "per_seed": per_seed, "real_clips": oracles, "seeds": seeds, "seconds": timings},
             figures={"strip": plot_strip(ev, strips, target, a)})


def plot_strip(ev, strips, target, a, clips=(0, 1)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["real clip"] + list(strips)
    fig, axes = plt.subplots(
        len(names) * len(clips), a.frames, figsize=(a.frames * 1.1, len(names) * len(clips) * 1.15)
    )
    for ci, c in enumerate(clips):
        for ri, name in enumerate(names):
            row = ci * len(names) + ri
            vids = ev["video"] if name == "real clip" else strips[name][0]
            for f in range(a.frames):
                ax = axes[row, f]
                ax.imshow(np.clip((vids[c, f] + 1) / 2, 0, 1), interpolation="nearest")
                ax.plot(target[c, 0, : f + 1, 0], target[c, 0, : f + 1, 1], "w-", lw=0.8)
                ax.plot(target[c, 0, f, 0], target[c, 0, f, 1], "wx", ms=4)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[row, 0].set_ylabel(name, fontsize=6)
    fig.suptitle("generated frames, target path in white (x = target position)", fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
