"""The two-phase dynamics of interactions (Zhang et al., arXiv 2405.10262), reproduced on scikit-learn digits.

Trains a ReLU MLP (`interact.train`, resumable through its work directory) on a small training split of
the 8x8 digits (nothing is downloaded), stopping at log-spaced steps. At every stop it explains the
log-odds of the true class on training and held-out samples with n = 8 players (the 2x4-pixel blocks of
the image, baseline 0 = the background), extracts AND-OR interactions (`interact.extract_and_or`) and
measures

- A_k^+ / A_k^- per order k (salient interactions, tau = 0.05 max|I|, AND and OR together, normalised by
  the total salient strength and averaged over samples), next to the train/test loss gap;
- the mean order of the interactions (strength-weighted), whose minimum marks the end of phase 1;
- the train/test Jaccard similarity of the mean interactions per class, for every order.

Command (the CPU defaults take a few minutes on 2 cores; scale up with --steps, --samples-per-class,
--hidden, --players 9/10, and split the 2^n subsets over devices with --cpu-devices / --mesh):

    python examples/interact_two_phase.py
    python examples/interact_two_phase.py --players 10 --samples-per-class 10 --steps 8000
    python examples/interact_two_phase.py --smoke --out /tmp/two_phase    # every code path in seconds

Outputs in outputs/interact_two_phase/ (or --out): results.json (per-checkpoint losses, accuracies,
strengths per order, mean orders, Jaccard by order, and the summary), two_phase.png (strength per order
across checkpoints, loss gap, mean order), jaccard.png (Jaccard vs order at several checkpoints),
spindle.png (order distribution at initialisation vs the random-game spindle and the noisy-triggering
theory), and run/ (the training work directory: config.json, metrics.jsonl, checkpoints;
`jaxzoo.rebuild` reads it back).

What to expect (numbers in results.json): the MLP overfits its small training split (train loss near zero,
test loss rising); the mean order of all Harsanyi interactions starts as a spindle at initialisation, falls
early (phase 1: low orders strengthen) and climbs back (phase 2); Jaccard(train, test) falls with the
order, as in the paper. Where this shallow MLP differs from the paper: it is nearly additive on inputs in
[0, 1], so the salient AND-OR interactions at initialisation are almost all first-order and phase 1 shows
only in the unthresholded distribution.
"""

from __future__ import annotations

import shutil

import jax.numpy as jnp
import matplotlib
import numpy as np
from sklearn.datasets import load_digits
from tqdm.auto import tqdm

import interact
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
    smoke = {"steps": 30, "checkpoints": 3, "train_size": 64, "batch_size": 16, "hidden": [32, 32],
             "samples_per_class": 1, "extract_steps": 50}  # fmt: skip
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


def main():
    args = parse_args()
    run = script.setup(args)  # --cpu-devices, --mesh, --out
    workdir = run.out / "run"
    if workdir.exists():
        shutil.rmtree(
            workdir
        )  # a fresh run each time (train would otherwise resume from the last checkpoint)

    digits = load_digits()
    x_all = (digits.data / 16.0).astype(np.float32)  # [1797, 64] in [0, 1]
    y_all = digits.target.astype(np.int32)
    perm = np.random.default_rng(args.seed).permutation(len(x_all))
    tr, te = perm[: args.train_size], perm[args.train_size :]
    x_tr, y_tr, x_te, y_te = x_all[tr], y_all[tr], x_all[te], y_all[te]

    run_cfg = interact.RunConfig(
        model=interact.MLPConfig(num_features=64, hidden=tuple(args.hidden), num_classes=10),
        optimizer=interact.RunConfig().optimizer.replace(learning_rate=args.lr),
        steps=args.steps, batch_size=args.batch_size, seed=args.seed,
    )  # fmt: skip
    model = interact.MLP(config=run_cfg.model)

    # Log-spaced stops: phase 1 is early, so the start is sampled densely.
    marks = np.unique(np.round(np.geomspace(10, args.steps, args.checkpoints - 1)).astype(int))
    stops = [0, *marks.tolist()]

    # Samples to explain: per class, the first few training and test images.
    players = image_players(args.players)
    n = len(players)
    pick_tr = np.concatenate([np.nonzero(y_tr == c)[0][: args.samples_per_class] for c in range(10)])
    pick_te = np.concatenate([np.nonzero(y_te == c)[0][: args.samples_per_class] for c in range(10)])
    xs = np.concatenate([x_tr[pick_tr], x_te[pick_te]])  # [2 * 10 * spc, 64]
    ys = np.concatenate([y_tr[pick_tr], y_te[pick_te]])
    is_train = np.arange(len(xs)) < len(pick_tr)
    baseline = np.zeros(64, np.float32)

    def v_fn(x_s, p, y):
        return interact.log_odds(model.apply({"params": p}, x_s), y)

    records = []
    for s in tqdm(stops, desc="train, then explain, at each checkpoint"):
        state, _ = interact.train(
            run_cfg, (x_tr, y_tr), mesh=run.mesh, workdir=workdir, stop_at=s, keep=len(stops) + 1,
            progress=False,
        )  # fmt: skip
        train_m = interact.evaluate(run_cfg, state.params, (x_tr, y_tr))
        test_m = interact.evaluate(run_cfg, state.params, (x_te, y_te))
        v = jnp.stack(
            [
                interact.evaluate_subsets(
                    v_fn,
                    xs[i],
                    baseline,
                    players,
                    batch_size=256,
                    mesh=run.mesh,
                    fn_args=(state.params, ys[i]),
                )  # fmt: skip
                for i in range(len(xs))
            ]
        )  # [samples, 2^n]
        res = interact.extract_and_or(v, q_bound=args.q_bound, steps=args.extract_steps, lr=args.extract_lr)
        pos, neg = interact.order_strengths(res.i_and, res.i_or, normalize="total")  # [samples, n]
        pos_tr, neg_tr = np.asarray(pos[is_train]).mean(0), np.asarray(neg[is_train]).mean(0)
        pos_te, neg_te = np.asarray(pos[~is_train]).mean(0), np.asarray(neg[~is_train]).mean(0)
        strength = pos_tr - neg_tr
        mean_order = float((np.arange(1, n + 1) * strength).sum() / max(strength.sum(), 1e-12))
        jac = np.mean(
            [
                np.asarray(
                    interact.jaccard_by_order(
                        res.i_and[is_train & (ys == c)],
                        res.i_and[~is_train & (ys == c)],
                        res.i_or[is_train & (ys == c)],
                        res.i_or[~is_train & (ys == c)],
                    )
                )
                for c in range(10)
            ],
            axis=0,
        )
        raw_strength = np.asarray(interact.strength_by_order(interact.harsanyi(v[is_train]))).mean(0)
        raw_order = float((np.arange(1, n + 1) * raw_strength).sum() / max(raw_strength.sum(), 1e-12))
        records.append(
            {
                "step": s,
                "train_loss": train_m["loss"],
                "test_loss": test_m["loss"],
                "loss_gap": test_m["loss"] - train_m["loss"],
                "train_acc": train_m["accuracy"],
                "test_acc": test_m["accuracy"],
                "A_pos_train": pos_tr.tolist(),
                "A_neg_train": neg_tr.tolist(),
                "A_pos_test": pos_te.tolist(),
                "A_neg_test": neg_te.tolist(),
                "mean_order_salient": mean_order,
                "mean_order_all": raw_order,
                "jaccard_by_order": jac.tolist(),
                "harsanyi_strength_by_order": raw_strength.tolist(),
                "l1_and_or": float(np.mean(res.loss)),
            }
        )

    # Where phase 1 ends: the checkpoint where the mean order of all Harsanyi interactions (no threshold) is
    # lowest; after it, higher orders come back (phase 2). Where the loss gap starts growing: the checkpoint
    # after which the gap never shrinks again (sustained growth).
    steps = np.array([r["step"] for r in records])
    orders = np.array([r["mean_order_all"] for r in records])
    salient_orders = np.array([r["mean_order_salient"] for r in records])
    gaps = np.array([r["loss_gap"] for r in records])
    phase1_end = int(steps[np.argmin(orders)])
    shrinks = np.nonzero(np.diff(gaps) < 0)[0]
    gap_start = int(steps[shrinks[-1] + 1]) if len(shrinks) else int(steps[0])

    # Theory: the noisy-triggering model's order distribution as sigma^2 shrinks (w* = final network's
    # AND interactions averaged over training samples) and the random-game spindle at initialisation.
    sig = np.geomspace(1.0, 1e-4, 5)
    theory = np.asarray(interact.predicted_order_strength(jnp.asarray(res.i_and[is_train].mean(0)), sig))
    spindle = interact.random_game_strength(n)
    spindle = spindle / spindle.sum()
    init_strength = np.array(records[0]["harsanyi_strength_by_order"])
    init_strength = init_strength / init_strength.sum()

    summary = {
        "phase1_end_step": phase1_end,
        "loss_gap_starts_growing_step": gap_start,
        "mean_order_all_by_checkpoint": dict(zip(steps.tolist(), orders.round(3).tolist())),
        "mean_order_salient_by_checkpoint": dict(zip(steps.tolist(), salient_orders.round(3).tolist())),
        "loss_gap_by_checkpoint": dict(zip(steps.tolist(), gaps.round(4).tolist())),
        "final_train_acc": records[-1]["train_acc"],
        "final_test_acc": records[-1]["test_acc"],
        "jaccard_final_by_order": records[-1]["jaccard_by_order"],
        "init_order_distribution": init_strength.tolist(),
        "random_game_spindle": spindle.tolist(),
    }

    # Plots.
    k = np.arange(1, n + 1)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for i, r in enumerate(records):
        c = cmap(i / max(1, len(records) - 1))
        axes[0].plot(k, r["A_pos_train"], color=c, label=f"step {r['step']}")
        axes[0].plot(k, r["A_neg_train"], color=c, ls="--")
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set(
        xlabel="order k", ylabel="A_k^+ (solid), A_k^- (dashed), normalised", title="interactions per order"
    )
    axes[0].legend(fontsize=6, ncol=2)
    axes[1].semilogx(np.maximum(steps, 1), gaps, "o-", label="test - train loss")
    axes[1].set(xlabel="step (0 drawn at 1)", ylabel="loss gap", title="loss gap")
    axes[1].axvline(max(phase1_end, 1), color="r", ls=":", label="phase 1 ends (min mean order)")
    axes[1].axvline(max(gap_start, 1), color="g", ls=":", label="gap grows from here on")
    axes[1].legend(fontsize=7)
    axes[2].semilogx(np.maximum(steps, 1), orders, "o-", label="all Harsanyi interactions")
    axes[2].semilogx(np.maximum(steps, 1), salient_orders, "s-", label="salient AND-OR interactions")
    axes[2].set(
        xlabel="step (0 drawn at 1)", ylabel="strength-weighted mean order", title="mean interaction order"
    )
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig_phase = fig

    fig, ax = plt.subplots(figsize=(6, 4))
    for i in np.unique(np.linspace(0, len(records) - 1, 5).round().astype(int)):
        ax.plot(k, records[i]["jaccard_by_order"], "o-", color=cmap(i / max(1, len(records) - 1)),
                label=f"step {records[i]['step']}")  # fmt: skip
    ax.set(
        xlabel="order k", ylabel="Jaccard(train, test)", title="generalisation of interactions", ylim=(0, 1)
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig_jaccard = fig

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(k, init_strength, "o-", label="network at init (sum |I_and| per order)")
    axes[0].plot(k, spindle, "s--", label="i.i.d. random game C(n,k) 2^{k/2}")
    axes[0].set(xlabel="order k", ylabel="share of strength", title="spindle at initialisation")
    axes[0].legend(fontsize=7)
    for i, s2 in enumerate(sig):
        axes[1].plot(k, theory[i], "o-", color=cmap(i / (len(sig) - 1)), label=f"sigma^2 = {s2:.0e}")
    axes[1].set(xlabel="order k", ylabel="share of |w_hat|", title="noisy-triggering theory")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig_spindle = fig

    script.print_table(
        [
            {"step": r["step"], "train loss": r["train_loss"], "test loss": r["test_loss"], "gap": r["loss_gap"],
             "test acc": r["test_acc"], "order (all)": r["mean_order_all"],
             "order (salient)": r["mean_order_salient"]}
            for r in records
        ],
        title="checkpoints",
    )  # fmt: skip
    print(
        "Jaccard(train, test) by order at the last checkpoint:", np.round(records[-1]["jaccard_by_order"], 3)
    )
    print(
        "order distribution at init:",
        np.round(init_strength, 3),
        "random-game spindle:",
        np.round(spindle, 3),
    )
    print(f"phase 1 ends at step {phase1_end} (lowest mean order of all Harsanyi interactions)")
    print(f"the loss gap grows without shrinking from step {gap_start} on")
    run.save(
        {"summary": summary, "checkpoints": records, "run_config": run_cfg.to_dict()},
        figures={"two_phase": fig_phase, "jaccard": fig_jaccard, "spindle": fig_spindle},
    )


if __name__ == "__main__":
    main()
