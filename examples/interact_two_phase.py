"""The two-phase dynamics of interactions (Zhang et al., arXiv 2405.10262), reproduced on scikit-learn digits.

Trains a ReLU MLP (`interact.train`, resumable through its work directory) on a small training split of
the 8x8 digits (nothing is downloaded), stopping at log-spaced steps. At every stop it explains the
log-odds of the true class on training and held-out samples with n = 8 players (the 2x4-pixel blocks of
the image, baseline 0 = the background), extracts AND-OR interactions (`interact.extract_and_or`) and
measures

- A_k^+ / A_k^- per order k (salient interactions, tau = 0.05 max|I|, AND and OR together, normalised by
  the total salient strength and averaged over samples), next to the train/test loss gap;
- the mean order of the interactions (strength-weighted), whose minimum marks the end of phase 1;
- the train/test Jaccard similarity of the mean interactions per class, for every order;
- at the end, the interactions the seeds' final models share (Chen et al., ICLR'24): AND-OR extracted
  jointly over the models' games on the same samples (`interact.extract_shared_and_or`) against one
  extraction per model, as the fraction of each model's salient interactions that are salient in all.

The training split of each seed is written once as shards (`jaxzoo.data.write_array_shards`, into
<out>/data_seed<k>) and read by a grain loader (`interact.train` on a `ShardedArrays`), whose state is
checkpointed with the run; the logged records carry examples/s and FLOP/s (`interact.flops_per_example`).

Command (the CPU defaults take about 8 minutes on 2 cores for the three seeds; --seeds 0 for one; scale up
with --steps, --samples-per-class, --hidden, --players 9/10, and split the 2^n subsets over devices with
--cpu-devices / --mesh):

    python examples/interact_two_phase.py
    python examples/interact_two_phase.py --players 10 --samples-per-class 10 --steps 8000
    python examples/interact_two_phase.py --smoke --out /tmp/two_phase    # every code path in seconds

Outputs in outputs/interact_two_phase/ (or --out): results.json (per seed and checkpoint: losses,
accuracies, strengths per order, mean orders, Jaccard by order; the summary with mean, std and values over
seeds), two_phase.png (salient mean order and loss gap across seeds, strength per order of the first seed),
jaccard.png (Jaccard vs order at several checkpoints), spindle.png (order distribution at initialisation
vs the binomial and i.i.d.-values references, and the noisy-triggering theory), and run_seed<k>/ (the
training work directories: config.json, metrics.jsonl, checkpoints; `jaxzoo.rebuild` reads them back).

What to expect (numbers in results.json; default run: seeds 0, 1, 2, about 8 minutes on 2 quiet cores): the
MLP overfits its small training split (train accuracy 1, the test - train loss gap grows through training).
The salient AND-OR interactions (tau = 0.05 max over the non-empty S) show the paper's two phases on every
seed: at initialisation their mean order sits in the middle (a spindle), it falls within the first few tens
of steps (phase 1: low orders strengthen), then rises steadily for the rest of training while the loss gap
grows (phase 2), ending below its initial value. The unthresholded Harsanyi distribution moves the same
way, much less. The old threshold, with the empty set inside max |I|, hides phase 1 (its salient order
starts at 1: the baseline output set the threshold). At initialisation the order distribution is close to
the binomial C(n, k) of independent interactions and far from C(n, k) 2^{k/2} of independent game values
(total-variation distances in results.json, "init_fit"). Jaccard(train, test) falls with the order.
Extracted jointly (`extract_shared_and_or`), about half of each final model's salient interactions are
salient in all three seeds' models, against about a third when each model is extracted alone
(results.json, "shared_interactions").
"""

from __future__ import annotations

import shutil

import jax.numpy as jnp
import matplotlib
import numpy as np
from sklearn.datasets import load_digits
from tqdm.auto import tqdm

import interact
import jaxzoo.data
from jaxzoo import script

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def parse_args():
    p = script.parser(__doc__)
    p.add_argument("--steps", type=int, default=3000, help="training steps (Adam, minibatches)")
    p.add_argument("--checkpoints", type=int, default=12, help="log-spaced checkpoints, step 0 included")
    p.add_argument("--train-size", type=int, default=300, help="training examples (small: to overfit)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--players", type=int, default=8, choices=[8, 9, 10], help="n: image blocks")
    p.add_argument("--samples-per-class", type=int, default=3, help="train and test samples explained")
    p.add_argument("--extract-steps", type=int, default=5000, help="AND-OR optimisation steps")
    p.add_argument("--extract-lr", type=float, default=1e-5, help="ICML'23 image setting")
    p.add_argument("--q-bound", type=float, default=0.04)
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="training seeds (data split, init, batches); the summary gives mean and spread",
    )
    smoke = {"steps": 30, "checkpoints": 3, "train_size": 64, "batch_size": 16, "hidden": [32, 32],
             "samples_per_class": 1, "extract_steps": 50, "seeds": [0, 1]}  # fmt: skip
    return script.parse(p, smoke=smoke)


def image_players(n: int) -> list[list[int]]:
    """n groups of pixels of the 8x8 image (flat index 8*row + col): 8 blocks of 2x4; 9/10 split more."""
    blocks = []
    for r in range(0, 8, 2):
        for c in range(0, 8, 4):
            blocks.append([8 * (r + i) + c + j for i in range(2) for j in range(4)])
    while len(blocks) < n:  # split the central blocks (rows 2-5) into 2x2 halves
        centre = [b for b in blocks if len(b) == 8 and 2 <= b[0] // 8 <= 4]
        b = centre[0]
        blocks.remove(b)
        blocks += [[p for p in b if p % 4 < 2], [p for p in b if p % 4 >= 2]]
    return blocks[:n]


def mean_order(strength: np.ndarray) -> float:
    """Strength-weighted mean order of a per-order strength vector (orders 1..n)."""
    k = np.arange(1, len(strength) + 1)
    return float((k * strength).sum() / max(strength.sum(), 1e-12))


def run_seed(args, run, seed: int) -> tuple[list[dict], object, interact.RunConfig]:
    """Train one MLP (seed: split, init, batches) and explain it at every checkpoint -> (one record per
    checkpoint, the final parameters, the run config). The training split goes through `jaxzoo.data`: written
    once as shards into the out folder and read by a grain loader (its state is checkpointed with the run)."""
    workdir = run.out / f"run_seed{seed}"
    if workdir.exists():
        shutil.rmtree(
            workdir
        )  # a fresh run each time (train would otherwise resume from the last checkpoint)

    digits = load_digits()
    x_all = (digits.data / 16.0).astype(np.float32)  # [1797, 64] in [0, 1]
    y_all = digits.target.astype(np.int32)
    perm = np.random.default_rng(seed).permutation(len(x_all))
    tr, te = perm[: args.train_size], perm[args.train_size :]
    x_tr, y_tr, x_te, y_te = x_all[tr], y_all[tr], x_all[te], y_all[te]
    shards = run.out / f"data_seed{seed}"
    if shards.exists():
        shutil.rmtree(shards)
    train_source = jaxzoo.data.write_array_shards(shards, [{"x": x_tr, "y": y_tr}])  # once per seed

    run_cfg = interact.RunConfig(
        model=interact.MLPConfig(num_features=64, hidden=tuple(args.hidden), num_classes=10),
        optimizer=interact.RunConfig().optimizer.replace(learning_rate=args.lr),
        steps=args.steps, batch_size=args.batch_size, seed=seed,
    )  # fmt: skip
    model = interact.MLP(config=run_cfg.model)

    # Log-spaced stops: phase 1 is early, so the start is sampled densely.
    marks = np.unique(np.round(np.geomspace(10, args.steps, args.checkpoints - 1)).astype(int))
    stops = [0, *marks.tolist()]

    # Samples to explain: per class, the first few training and test images.
    players = image_players(args.players)
    len(players)
    pick_tr = np.concatenate([np.nonzero(y_tr == c)[0][: args.samples_per_class] for c in range(10)])
    pick_te = np.concatenate([np.nonzero(y_te == c)[0][: args.samples_per_class] for c in range(10)])
    xs = np.concatenate([x_tr[pick_tr], x_te[pick_te]])  # [2 * 10 * spc, 64]
    ys = np.concatenate([y_tr[pick_tr], y_te[pick_te]])
    is_train = np.arange(len(xs)) < len(pick_tr)
    baseline = np.zeros(64, np.float32)

    def v_fn(x_s, p, y):
        return interact.log_odds(model.apply({"params": p}, x_s), y)

    records = []
    for s in tqdm(stops, desc=f"seed {seed}: train, then explain, at each checkpoint"):
        state, _ = interact.train(
            run_cfg, train_source, mesh=run.mesh, workdir=workdir, stop_at=s, keep=len(stops) + 1,
            progress=False,
        )  # fmt: skip
        train_m = interact.evaluate(run_cfg, state.params, (x_tr, y_tr))
        test_m = interact.evaluate(run_cfg, state.params, (x_te, y_te))
        v = jnp.stack([
            interact.evaluate_subsets(v_fn, xs[i], baseline, players, batch_size=256, mesh=run.mesh,
                                      fn_args=(state.params, ys[i]))
            for i in range(len(xs))
        ])  # fmt: skip  # [samples, 2^n]
        res = interact.extract_and_or(v, q_bound=args.q_bound, steps=args.extract_steps, lr=args.extract_lr)
        pos, neg = interact.order_strengths(res.i_and, res.i_or, normalize="total")  # [samples, n]
        pos_tr, neg_tr = np.asarray(pos[is_train]).mean(0), np.asarray(neg[is_train]).mean(0)
        pos_te, neg_te = np.asarray(pos[~is_train]).mean(0), np.asarray(neg[~is_train]).mean(0)
        # The old threshold (the empty set inside max |I|), for comparison only.
        pos_old, neg_old = interact.order_strengths(
            res.i_and, res.i_or, normalize="total", include_empty=True
        )
        old = np.asarray(pos_old[is_train]).mean(0) - np.asarray(neg_old[is_train]).mean(0)
        jac = np.mean([
            np.asarray(interact.jaccard_by_order(
                res.i_and[is_train & (ys == c)], res.i_and[~is_train & (ys == c)],
                res.i_or[is_train & (ys == c)], res.i_or[~is_train & (ys == c)]))
            for c in range(10)
        ], axis=0)  # fmt: skip
        raw_strength = np.asarray(interact.strength_by_order(interact.harsanyi(v[is_train]))).mean(0)
        records.append({
            "step": s, "train_loss": train_m["loss"], "test_loss": test_m["loss"],
            "loss_gap": test_m["loss"] - train_m["loss"], "train_acc": train_m["accuracy"],
            "test_acc": test_m["accuracy"], "A_pos_train": pos_tr.tolist(), "A_neg_train": neg_tr.tolist(),
            "A_pos_test": pos_te.tolist(), "A_neg_test": neg_te.tolist(),
            "mean_order_salient": mean_order(pos_tr - neg_tr),
            "mean_order_salient_with_empty": mean_order(old),
            "mean_order_all": mean_order(raw_strength), "jaccard_by_order": jac.tolist(),
            "harsanyi_strength_by_order": raw_strength.tolist(), "l1_and_or": float(np.mean(res.loss)),
        })  # fmt: skip
    return records, state.params, run_cfg


def salient_sets(i_and, i_or) -> np.ndarray:
    """Bool [..., 2, 2^n]: the salient AND and OR interactions (tau = 0.05 max over the non-empty S)."""
    m_and, m_or = interact.salient_mask(i_and, i_or)
    both = np.stack([np.asarray(m_and), np.asarray(m_or)], axis=-2)
    both[..., 0] = False  # the empty set is the baseline output, not an interaction
    return both


def shared_fraction(masks: np.ndarray) -> dict:
    """masks [M, samples, 2, 2^n] of M models: the share of each model's salient interactions that are
    salient in every model (mean over models and samples), and the shared count per sample."""
    shared = masks.all(axis=0)  # [samples, 2, 2^n]
    own = masks.sum(axis=(-2, -1)).astype(np.float64)  # [M, samples]
    count = shared.sum(axis=(-2, -1)).astype(np.float64)  # [samples]
    return {"fraction": float(np.mean(count[None] / np.maximum(own, 1))),
            "shared_per_sample": float(count.mean()), "salient_per_model_sample": float(own.mean())}  # fmt: skip


def shared_interactions(args, run, finals) -> dict:
    """The interactions the seeds' final models share (Chen et al., ICLR'24) on the same samples: AND-OR
    extracted jointly over the models (`extract_shared_and_or`) against one extraction per model."""
    digits = load_digits()
    x_all = (digits.data / 16.0).astype(np.float32)
    y_all = digits.target.astype(np.int32)
    pick = np.concatenate([np.nonzero(y_all == c)[0][: args.samples_per_class] for c in range(10)])
    xs, ys = x_all[pick], y_all[pick]  # the same samples for every model (in some seeds' training splits)
    players = image_players(args.players)
    baseline = np.zeros(64, np.float32)
    v = []
    for params, run_cfg in finals:
        model = interact.MLP(config=run_cfg.model)

        def v_fn(x_s, p, y, model=model):
            return interact.log_odds(model.apply({"params": p}, x_s), y)

        v.append(jnp.stack([
            interact.evaluate_subsets(v_fn, xs[i], baseline, players, batch_size=256, mesh=run.mesh,
                                      fn_args=(params, ys[i]))
            for i in range(len(xs))
        ]))  # fmt: skip
    v = jnp.stack(v)  # [M, samples, 2^n]
    joint = interact.extract_shared_and_or(
        v, q_bound=args.q_bound, steps=args.extract_steps, lr=args.extract_lr
    )
    alone = interact.extract_and_or(v, q_bound=args.q_bound, steps=args.extract_steps, lr=args.extract_lr)
    out = {"models": len(finals), "samples": len(xs),
           "joint": shared_fraction(salient_sets(joint.i_and, joint.i_or)),
           "separate": shared_fraction(salient_sets(alone.i_and, alone.i_or))}  # fmt: skip
    return out


def phases(records: list[dict], key: str) -> dict:
    """Init, minimum and final of a mean-order curve, and where the loss gap starts growing for good."""
    steps = np.array([r["step"] for r in records])
    orders = np.array([r[key] for r in records])
    gaps = np.array([r["loss_gap"] for r in records])
    shrinks = np.nonzero(np.diff(gaps) < 0)[0]
    i_min = int(np.argmin(orders))
    return {
        "init": float(orders[0]), "min": float(orders[i_min]), "min_step": int(steps[i_min]),
        "final": float(orders[-1]), "fall": float(orders[0] - orders[i_min]),
        "rise": float(orders[-1] - orders[i_min]),
        "gap_grows_from_step": int(steps[shrinks[-1] + 1]) if len(shrinks) else int(steps[0]),
    }  # fmt: skip


def tv(a, b) -> float:
    """Total-variation distance of two distributions over orders."""
    return 0.5 * float(np.abs(np.asarray(a) - np.asarray(b)).sum())


def main():
    args = parse_args()
    run = script.setup(args)  # --cpu-devices, --mesh, --out
    n = args.players
    finished = {seed: run_seed(args, run, seed) for seed in args.seeds}
    per_seed = {seed: recs for seed, (recs, _, _) in finished.items()}
    shared = (shared_interactions(args, run, [(p, c) for _, p, c in finished.values()])
              if len(finished) > 1 else {"models": 1, "note": "one seed: nothing to share"})  # fmt: skip

    def stats(values):
        values = np.asarray(values, np.float64)
        return {"mean": float(values.mean()), "std": float(values.std()), "values": values.round(4).tolist()}

    curves = {key: np.array([[r[key] for r in recs] for recs in per_seed.values()])
              for key in ("mean_order_salient", "mean_order_salient_with_empty", "mean_order_all", "loss_gap")}  # fmt: skip
    steps = np.array([r["step"] for r in next(iter(per_seed.values()))])
    ph = {key: [phases(recs, key) for recs in per_seed.values()]
          for key in ("mean_order_salient", "mean_order_all")}  # fmt: skip

    # Spindle references at initialisation: (a) i.i.d. game values, C(n, k) 2^{k/2}; (b) independent
    # interactions of equal spread (the seed document's argument), binomial C(n, k).
    spindle_values = interact.random_game_strength(n)
    spindle_values = spindle_values / spindle_values.sum()
    spindle_binom = interact.random_interaction_strength(n)
    spindle_binom = spindle_binom / spindle_binom.sum()
    init = np.array([recs[0]["harsanyi_strength_by_order"] for recs in per_seed.values()])
    init = init / init.sum(-1, keepdims=True)  # [seeds, n]
    init_mean = init.mean(0)
    fits = {"tv_to_iid_values": stats([tv(d, spindle_values) for d in init]),
            "tv_to_binomial": stats([tv(d, spindle_binom) for d in init])}  # fmt: skip
    fits["closer"] = ("binomial (independent interactions)"
                      if fits["tv_to_binomial"]["mean"] < fits["tv_to_iid_values"]["mean"]
                      else "C(n,k) 2^{k/2} (i.i.d. game values)")  # fmt: skip

    last = [recs[-1] for recs in per_seed.values()]
    summary = {
        "seeds": list(per_seed),
        "steps": steps.tolist(),
        "salient_mean_order": {k: stats([p[k] for p in ph["mean_order_salient"]])
                               for k in ("init", "min", "min_step", "final", "fall", "rise")},
        "all_harsanyi_mean_order": {k: stats([p[k] for p in ph["mean_order_all"]])
                                    for k in ("init", "min", "min_step", "final", "fall", "rise")},
        "loss_gap_grows_from_step": stats([p["gap_grows_from_step"] for p in ph["mean_order_salient"]]),
        "salient_mean_order_by_checkpoint_mean": curves["mean_order_salient"].mean(0).round(4).tolist(),
        "salient_mean_order_by_checkpoint_std": curves["mean_order_salient"].std(0).round(4).tolist(),
        "salient_with_empty_by_checkpoint_mean": curves["mean_order_salient_with_empty"].mean(0).round(4).tolist(),
        "all_mean_order_by_checkpoint_mean": curves["mean_order_all"].mean(0).round(4).tolist(),
        "loss_gap_by_checkpoint_mean": curves["loss_gap"].mean(0).round(4).tolist(),
        "final_train_acc": stats([r["train_acc"] for r in last]),
        "final_test_acc": stats([r["test_acc"] for r in last]),
        "jaccard_final_by_order_mean": np.mean([r["jaccard_by_order"] for r in last], 0).round(4).tolist(),
        "init_order_distribution_mean": init_mean.round(4).tolist(),
        "spindle_iid_values": spindle_values.round(4).tolist(),
        "spindle_binomial": spindle_binom.round(4).tolist(),
        "init_fit": fits,
        "shared_interactions": shared,
    }  # fmt: skip

    # Plots: salient mean order and loss gap across seeds; per-order strengths of the first seed; Jaccard.
    k = np.arange(1, n + 1)
    x = np.maximum(steps, 1)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for key, style, label in (("mean_order_salient", "o-", "salient AND-OR (empty set excluded)"),
                              ("mean_order_salient_with_empty", "x:", "salient, old threshold (with empty set)"),
                              ("mean_order_all", "s--", "all Harsanyi, no threshold")):  # fmt: skip
        c = curves[key]
        line = axes[0].semilogx(x, c.mean(0), style, label=label)[0]
        axes[0].fill_between(x, c.min(0), c.max(0), color=line.get_color(), alpha=0.2)
    axes[0].set(xlabel="step (0 drawn at 1)", ylabel="strength-weighted mean order",
                title=f"mean interaction order, seeds {list(per_seed)} (band: min-max)")  # fmt: skip
    axes[0].legend(fontsize=7)
    c = curves["loss_gap"]
    axes[1].semilogx(x, c.mean(0), "o-", label="test - train loss")
    axes[1].fill_between(x, c.min(0), c.max(0), alpha=0.2)
    axes[1].set(xlabel="step (0 drawn at 1)", ylabel="loss gap", title="loss gap (band: min-max over seeds)")
    first = next(iter(per_seed.values()))
    for i, r in enumerate(first):
        col = cmap(i / max(1, len(first) - 1))
        axes[2].plot(k, r["A_pos_train"], color=col, label=f"step {r['step']}")
        axes[2].plot(k, r["A_neg_train"], color=col, ls="--")
    axes[2].axhline(0, color="k", lw=0.5)
    axes[2].set(xlabel="order k", ylabel="A_k^+ (solid), A_k^- (dashed), normalised",
                title=f"salient interactions per order (seed {args.seeds[0]})")  # fmt: skip
    axes[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig_phase = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    for i in np.unique(np.linspace(0, len(first) - 1, 5).round().astype(int)):
        jac = np.mean([recs[i]["jaccard_by_order"] for recs in per_seed.values()], 0)
        ax.plot(k, jac, "o-", color=cmap(i / max(1, len(first) - 1)), label=f"step {first[i]['step']}")
    ax.set(xlabel="order k", ylabel="Jaccard(train, test)", title="generalisation of interactions (seed mean)",
           ylim=(0, 1))  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig_jaccard = fig

    sig = np.geomspace(1.0, 1e-4, 5)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(k, init_mean, "o-", label="network at init (sum |I_and| per order, seed mean)")
    axes[0].plot(k, spindle_values, "s--", label="i.i.d. game values: C(n,k) 2^{k/2}")
    axes[0].plot(k, spindle_binom, "d:", label="independent interactions: C(n,k)")
    axes[0].set(xlabel="order k", ylabel="share of strength", title="spindle at initialisation")
    axes[0].legend(fontsize=7)
    theory = np.asarray(interact.predicted_order_strength(
        jnp.asarray(np.random.default_rng(0).normal(size=2**n)), sig))  # fmt: skip
    for i, s2 in enumerate(sig):
        axes[1].plot(k, theory[i], "o-", color=cmap(i / (len(sig) - 1)), label=f"sigma^2 = {s2:.0e}")
    axes[1].set(xlabel="order k", ylabel="share of |w_hat|", title="noisy-triggering theory (random w*)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig_spindle = fig

    script.print_table(
        [{"step": int(st), "gap": float(curves["loss_gap"].mean(0)[i]),
          "order salient": float(curves["mean_order_salient"].mean(0)[i]),
          "+-": float(curves["mean_order_salient"].std(0)[i]),
          "order salient (old)": float(curves["mean_order_salient_with_empty"].mean(0)[i]),
          "order all": float(curves["mean_order_all"].mean(0)[i])}
         for i, st in enumerate(steps)],
        title=f"checkpoints, mean over seeds {list(per_seed)}",
    )  # fmt: skip
    sal = summary["salient_mean_order"]
    print(f"salient mean order: init {sal['init']['mean']:.3f} +- {sal['init']['std']:.3f}, "
          f"min {sal['min']['mean']:.3f} +- {sal['min']['std']:.3f} at steps {sal['min_step']['values']}, "
          f"final {sal['final']['mean']:.3f} +- {sal['final']['std']:.3f}")  # fmt: skip
    print(
        f"init order distribution {init_mean.round(3)}; closer to the {fits['closer']} reference "
        f"(TV {fits['tv_to_binomial']['mean']:.3f} binomial, {fits['tv_to_iid_values']['mean']:.3f} i.i.d. values)"
    )
    if "joint" in shared:
        script.print_table(
            [{"extraction": kind, "shared fraction": shared[kind]["fraction"],
              "shared / sample": shared[kind]["shared_per_sample"],
              "salient / model, sample": shared[kind]["salient_per_model_sample"]}
             for kind in ("joint", "separate")],
            title=f"salient interactions shared by the {shared['models']} seeds' final models "
            f"({shared['samples']} samples)",
        )  # fmt: skip
    run.save(
        {"summary": summary, "checkpoints": {str(s): recs for s, recs in per_seed.items()}},
        figures={"two_phase": fig_phase, "jaccard": fig_jaccard, "spindle": fig_spindle},
    )


if __name__ == "__main__":
    main()
