"""Sparsity vs reconstruction frontier of the five SAE architectures on toy data with known features.

Activations come from ``sae.toy.superposition_data`` (Sharkey et al.: d_in 256, 512 unit-norm ground-truth
features, 5 active on average, frequencies ~0.99^i). For each architecture we train at a few sparsity settings
(k for TopK/BatchTopK, the L1 coefficient for ReLU/Gated, the L0 coefficient for JumpReLU) and record, on
held-out activations, L0, explained variance and MMCS (mean max cosine of the ground-truth features to the
decoder rows). Writes ``results.json`` (mean +- std per setting, and every run) and ``frontier.png`` (L0 vs EV, and
L0 vs MMCS) into ``--out`` (default outputs/sae_toy_frontier).

    python examples/sae_toy_frontier.py                       # CPU defaults: 10 settings x 3 seeds x 200 steps
    python examples/sae_toy_frontier.py --smoke --out /tmp/x  # every code path in seconds
    python examples/sae_toy_frontier.py --steps 5000 --batch-size 4096 --d-sae 2048 --train-tokens 2000000   # GPU

Every architecture trains for the same steps at the same learning rate (3e-3, batch 512), 3 seeds per
setting; the table and results.json give mean +- std. What the defaults showed (a short run, none converged):
  - TopK and BatchTopK beat ReLU-L1 clearly at low L0: about 0.88 explained variance at L0 10-12, where
    ReLU-L1 (coefficient 5) reaches about 0.61; at L0 5 TopK keeps about 0.82. BatchTopK at k 5 leaves a
    quarter of its latents dead in this budget.
  - JumpReLU sits above the ReLU-L1 curve (about 0.91 at L0 24 against ReLU's 0.93 at L0 32 and 0.61 at L0 12),
    and its L0 falls as the L0 coefficient rises (36 -> 24 for 0.5 -> 2).
  - Gated does not beat ReLU-L1 here: 0.93 at L0 35, on the ReLU curve (0.93 at L0 32), and its weaker
    setting stays dense (L0 ~180).
  - Feature recovery (MMCS) is highest for ReLU-L1 at coefficient 1 (~0.58) and ~0.52-0.54 for TopK: at 200
    steps the rarest features (firing ~3e-4 of the time) are not learnt by any architecture.
A longer, wider TopK run recovers the features:
    python examples/sae_toy_frontier.py --archs topk --topk 5 --d-sae 2048 --steps 1500 --lr 2e-3 \
        --train-tokens 400000 --seeds 1
Numbers: see results.json.
"""

from __future__ import annotations

from jaxzoo import script

parser = script.parser(__doc__)
parser.add_argument("--d-in", type=int, default=256)
parser.add_argument("--n-features", type=int, default=512)
parser.add_argument("--avg-active", type=float, default=5.0)
parser.add_argument("--d-sae", type=int, default=512)
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--batch-size", type=int, default=512)
parser.add_argument("--seeds", type=int, default=3, help="training seeds per setting (mean +- std)")
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--train-tokens", type=int, default=100_000)
parser.add_argument("--eval-tokens", type=int, default=16_384)
parser.add_argument("--archs", default="topk,batchtopk,relu,gated,jumprelu", help="also: matryoshka")
parser.add_argument("--topk", default="5,10", help="k values for topk and batchtopk")
parser.add_argument("--l1", default="1,5", help="L1 coefficients for relu")
parser.add_argument("--gated-l1", default="0.5,2", help="L1 coefficients for gated")
parser.add_argument("--l0", default="0.5,2", help="L0 coefficients for jumprelu")
SMOKE = {
    "d_in": 16,
    "n_features": 32,
    "avg_active": 3.0,
    "d_sae": 32,
    "steps": 3,
    "batch_size": 64,
    "seeds": 2,
    "train_tokens": 1024,
    "eval_tokens": 256,
    "topk": "2",
    "l1": "1",
    "gated_l1": "1",
    "l0": "1",
}
args = script.parse(parser, smoke=SMOKE)
run = script.setup(args)

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import sae  # noqa: E402


def floats(s):
    return [float(v) for v in s.split(",") if v]


def runs():
    for arch in args.archs.split(","):
        if arch in ("topk", "batchtopk"):
            for k in floats(args.topk):
                yield arch, {"k": int(k)}
        elif arch == "matryoshka":  # nested prefixes at 1/8, 1/4, 1/2 of the dictionary
            for k in floats(args.topk):
                yield arch, {"k": int(k), "matryoshka_widths": tuple(args.d_sae // f for f in (8, 4, 2))}
        elif arch == "relu":
            for lam in floats(args.l1):
                yield arch, {"l1_coefficient": lam}
        elif arch == "gated":
            for lam in floats(args.gated_l1):
                yield arch, {"l1_coefficient": lam}
        elif arch == "jumprelu":
            # Our choice for a short run: theta starts at 0.5 with bandwidth 0.5 (activations have norm
            # sqrt(d_in), so latents are O(1-10)); Gemma Scope's 0.001/0.001 needs ~100k steps to move theta.
            # At this run's high learning rate theta learns at the common rate (threshold_lr_scale 1).
            for lam in floats(args.l0):
                yield (
                    arch,
                    {
                        "l0_coefficient": lam,
                        "jumprelu_init_threshold": 0.5,
                        "jumprelu_bandwidth": 0.5,
                        "threshold_lr_scale": 1.0,
                    },
                )
        else:
            raise ValueError(f"unknown architecture {arch!r} in --archs")


def main():
    x, features = sae.toy.superposition_data(
        args.train_tokens + args.eval_tokens,
        d_in=args.d_in,
        n_features=args.n_features,
        avg_active=args.avg_active,
        seed=args.seed,
    )
    train_x, eval_x = x[: args.train_tokens], x[args.train_tokens :]
    results = []
    plan = [(arch, hp, args.seed + i) for arch, hp in runs() for i in range(args.seeds)]
    for arch, hp, seed in tqdm(plan, desc="frontier"):
        cfg = sae.SAEConfig(
            d_in=args.d_in, d_sae=args.d_sae, architecture=arch, init_samples=8192, dead_tokens=200_000, **hp
        )
        params, _ = sae.train(
            cfg,
            train_x,
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            seed=seed,
            mesh=run.mesh,
            progress=False,
        )
        report = sae.evaluate(cfg, params, eval_x)
        rec = sae.toy.recovery(params, features)
        row = {
            "architecture": arch,
            **hp,
            "seed": seed,
            "l0": report["l0"],
            "explained_variance": report["explained_variance"],
            "dead_fraction": report["dead_fraction"],
            "l2_ratio": report["l2_ratio"],
            **rec,
        }
        results.append(row)
    summary = summarise(results)
    script.print_table(
        [
            {
                "run": f"{r['architecture']} {sparsity(r)}",
                **{k: f"{r[k]:.3f} ± {r[k + '_std']:.3f}" for k in COLUMNS},
            }
            for r in summary
        ],
        title=f"held out ({args.eval_tokens} tokens), {args.steps} steps of {args.batch_size}, "
        f"mean ± std over {args.seeds} seeds",
    )
    run.save({"summary": summary, "runs": results}, figures={"frontier": plot(summary)})


def summarise(results):
    """One row per (architecture, setting): mean and std over seeds of each column."""
    groups = {}
    for r in results:
        key = tuple((k, v) for k, v in r.items() if k in SETTING)
        groups.setdefault(key, []).append(r)
    out = []
    for key, rows in groups.items():
        row = dict(key)
        row["seeds"] = len(rows)
        for c in COLUMNS:
            values = np.asarray([r[c] for r in rows], np.float64)
            row[c], row[c + "_std"] = float(values.mean()), float(values.std())
        out.append(row)
    return out


SETTING = ("architecture", "k", "matryoshka_widths", "l1_coefficient", "l0_coefficient", "jumprelu_init_threshold",
           "jumprelu_bandwidth", "threshold_lr_scale")  # fmt: skip
COLUMNS = ("l0", "explained_variance", "mmcs", "frac_recovered", "dead_fraction")


def sparsity(row):
    return ", ".join(f"{k}={row[k]}" for k in ("k", "l1_coefficient", "l0_coefficient") if k in row)


def plot(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arch in dict.fromkeys(r["architecture"] for r in results):
        rows = sorted((r for r in results if r["architecture"] == arch), key=lambda r: r["l0"])
        l0, l0_err = [r["l0"] for r in rows], [r["l0_std"] for r in rows]
        for ax, col in ((axes[0], "explained_variance"), (axes[1], "mmcs")):
            ax.errorbar(l0, [r[col] for r in rows], xerr=l0_err, yerr=[r[col + "_std"] for r in rows],
                        fmt="o-", capsize=2, label=arch)  # fmt: skip
    axes[0].set(xlabel="L0 (active latents per token)", ylabel="explained variance", xscale="log")
    axes[1].set(xlabel="L0 (active latents per token)", ylabel="MMCS to ground-truth features", xscale="log")
    axes[0].axvline(args.avg_active, color="grey", ls=":", lw=1)
    axes[1].axvline(args.avg_active, color="grey", ls=":", lw=1)
    axes[0].legend()
    fig.suptitle(f"toy superposition: d_in {args.d_in}, {args.n_features} features, d_sae {args.d_sae}")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
