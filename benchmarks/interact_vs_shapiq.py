"""Exact Harsanyi (Moebius) interactions: interact vs shapiq's ExactComputer, on the same games and model.

Two workloads, both in float64 so the values can be compared to 1e-6:
- "moebius": the transform alone, on a random game with 2^n values (ours: fast subset transform, O(n 2^n),
  jitted; shapiq: `ExactComputer(game, n)("Moebius")`, a Python loop over powersets, O(3^n)). For the n of
  --ours-ns only ours runs.
- "pipeline": 2^n calls of the same small MLP on masked inputs plus the transform (ours:
  `evaluate_subsets` + `harsanyi`; shapiq: ExactComputer on a game that masks and calls the same jitted
  model on its coalition matrix in one batch).

- "<index> k=<order>": shapiq's indices k-SII, STII, FSII, FBII and Co-Moebius from the dividends (ours:
  `interaction_index(harsanyi(v), index, order)`, chunked superset sums, O(r 2^n) for order 2; shapiq:
  `ExactComputer(game, n)(index, order)`, Python loops over coalitions x interactions), on random games,
  for --index-ns (shapiq only up to --index-peer-max-n, where the values must agree to 1e-9; FSII to 1e-6,
  since shapiq fits it with a 1e7 penalty instead of the constraints). At the largest n, ours also at the
  default order (k = n) and in float32 ("f32"): the issue asks for every index at n = 20 in under 0.1 s.

Command:

    python benchmarks/interact_vs_shapiq.py [--ns 8 10 12 14] [--ours-ns 16 18 20] [--repeats 3]
    python benchmarks/interact_vs_shapiq.py --smoke --out /tmp/shapiq    # every code path in seconds

Times are medians after a warm-up: --ours-repeats runs of ours, --repeats of shapiq (once above n = 12).
shapiq is optional (`pip install shapiq`): without it the table has our columns only and says so. The
table is printed and written, with the machine, to results.json (plus times.png); ours is faster by a
factor that grows with n (O(n 2^n) against O(3^n)).
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import matplotlib
import numpy as np

import interact
import jaxzoo
from jaxzoo import script

matplotlib.use("Agg")
import matplotlib.pyplot as plt

F64 = jaxzoo.Precision(param_dtype="float64", compute_dtype="float64")  # values compared to 1e-6

try:
    from shapiq import ExactComputer
except ImportError:  # the peer is optional: our columns still run
    ExactComputer = None


def parse_args():
    p = script.parser(__doc__)
    p.add_argument("--ns", type=int, nargs="+", default=[8, 10, 12, 14], help="n for both libraries")
    p.add_argument("--ours-ns", type=int, nargs="+", default=[16, 18, 20], help="n for ours alone")
    p.add_argument("--pipeline-ns", type=int, nargs="+", default=[8, 10, 12])
    p.add_argument("--repeats", type=int, default=3, help="runs of shapiq (n <= 12)")
    p.add_argument("--ours-repeats", type=int, default=15, help="runs of ours (milliseconds each)")
    p.add_argument("--index-ns", type=int, nargs="+", default=[8, 10, 12, 16, 20], help="n for the indices")
    p.add_argument("--index-order", type=int, default=2, help="order k of the indices")
    p.add_argument("--index-peer-max-n", type=int, default=12, help="largest n where shapiq runs the indices")
    smoke = {"ns": [4, 6], "ours_ns": [8], "pipeline_ns": [4], "repeats": 1, "ours_repeats": 2,
             "index_ns": [6], "index_peer_max_n": 6}  # fmt: skip
    # one H200: the transforms and indices up to n = 24 (2^24 subsets), the peer only where it is tractable
    accelerator = {"ours_ns": [16, 20, 22, 24], "index_ns": [12, 16, 20, 24], "ns": [8, 10, 12]}
    return script.parse(p, smoke=smoke, accelerator=accelerator)


def to_bits(coalitions: np.ndarray) -> np.ndarray:
    """shapiq's coalition matrix [m, n] (bool) -> our subset indices [m]."""
    return (coalitions.astype(np.int64) << np.arange(coalitions.shape[1])).sum(axis=1)


def shapiq_moebius(game_fn, n):
    """Moebius values in our subset-index order, computed by shapiq."""
    computer = ExactComputer(game_fn, n_players=n, evaluate_game=True)
    result = computer("Moebius")
    out = np.zeros(2**n)
    for coalition, pos in result.interaction_lookup.items():
        out[sum(1 << i for i in coalition)] = result.values[pos]
    return out


def peer_time(fn, n, repeats):
    """Median of ``repeats`` after a warm-up; one cold run for the large n where shapiq takes minutes."""
    return script.timeit(fn, warmup=1, repeats=repeats) if n <= 12 else script.timeit(fn, warmup=0, repeats=1)


def row(workload, n, ours, peer=None, err=None):
    return {
        "workload": workload,
        "n": n,
        "ours (ms)": ours * 1e3,
        "shapiq (ms)": peer * 1e3 if peer is not None else "-",
        "ratio": f"{peer / ours:.{0 if peer / ours >= 10 else 1}f}x" if peer is not None else "-",
        "max abs diff": f"{err:.1e}" if err is not None else "-",
    }


def main():
    args = parse_args()
    run = script.setup(args)
    have_peer = ExactComputer is not None
    if not have_peer:
        print("shapiq is not installed (pip install shapiq): timing ours only; the shapiq columns show '-'.")
    rows = []
    rng = np.random.default_rng(args.seed)
    for n in [*args.ns, *args.ours_ns]:
        v = rng.normal(size=2**n)
        v_dev = jnp.asarray(v)
        ours = script.timeit(lambda v_dev=v_dev: interact.harsanyi(v_dev), repeats=args.ours_repeats)
        mine = np.asarray(interact.harsanyi(v_dev))
        if n in args.ns and have_peer:
            game = lambda coalitions, v=v: v[to_bits(coalitions)]
            out = {}

            def peer(game=game, n=n, out=out):
                out["v"] = shapiq_moebius(game, n)

            peer_t = peer_time(peer, n, args.repeats)
            err = float(np.abs(mine - out["v"]).max())
            assert err <= 1e-6 * max(1.0, np.abs(out["v"]).max()), f"values differ at n={n}: {err}"
            rows.append(row("moebius", n, ours, peer_t, err))
        else:
            rows.append(row("moebius", n, ours))

    # The same small model for both: an MLP on 32 features, explained with n players of 32 // n features.
    cfg = interact.MLPConfig(num_features=32, hidden=(64, 64), num_classes=4, precision=F64)
    model = interact.MLP(config=cfg)
    x = rng.normal(size=32)
    params = jax.jit(model.init)(jax.random.key(args.seed), x)
    label = 1
    for n in args.pipeline_ns:
        size = 32 // n
        players = [list(range(i * size, (i + 1) * size)) for i in range(n)]
        baseline = np.zeros(32)
        member = interact.player_matrix(players, (32,))

        def v_fn(xs, p, y):
            return interact.log_odds(model.apply(p, xs), y)

        def ours_pipeline(players=players, baseline=baseline):
            v = interact.evaluate_subsets(
                v_fn, x, baseline, players, batch_size=1024, fn_args=(params, label)
            )
            return interact.harsanyi(v)

        ours = script.timeit(ours_pipeline, repeats=args.ours_repeats)
        if not have_peer:
            rows.append(row("pipeline (2^n MLP calls + Moebius)", n, ours))
            continue
        batched = jax.jit(lambda xs, p: interact.log_odds(model.apply(p, xs), label))

        def game(coalitions, member=member, batched=batched, baseline=baseline):
            keep = (coalitions.astype(np.float64) @ member.astype(np.float64)) > 0  # [m, 32]
            keep |= ~member.any(0)
            return np.asarray(batched(np.where(keep, x, baseline), params))

        out = {}

        def peer(game=game, n=n, out=out):
            out["v"] = shapiq_moebius(game, n)

        peer_t = peer_time(peer, n, args.repeats)
        err = float(np.abs(np.asarray(ours_pipeline()) - out["v"]).max())
        rows.append(row("pipeline (2^n MLP calls + Moebius)", n, ours, peer_t, err))

    for n in args.index_ns:
        v = rng.normal(size=2**n)
        m = interact.harsanyi(jnp.asarray(v))
        for index in ("k-SII", "STII", "FSII", "FBII", "Co-Moebius"):
            k = min(args.index_order, n)
            ours = script.timeit(lambda m=m, index=index, k=k: interact.interaction_index(m, index, k),
                                 repeats=args.ours_repeats)  # fmt: skip
            name = f"{index} k={k}"
            extra = []  # rows after this one
            if n == max(args.index_ns):  # the largest n: also the default order (n) and float32
                for label, arr, order in ((f"{index} k=n", m, None), (f"{index} k={k} f32", m.astype(jnp.float32), k),
                                          (f"{index} k=n f32", m.astype(jnp.float32), None)):  # fmt: skip
                    t = script.timeit(lambda arr=arr, index=index, order=order: interact.interaction_index(arr, index, order),
                                      repeats=args.ours_repeats)  # fmt: skip
                    extra.append(row(label, n, t))
            if not have_peer or n > args.index_peer_max_n:
                rows += [row(name, n, ours), *extra]
                continue
            mine = np.asarray(interact.interaction_index(m, index, k))
            game = lambda coalitions, v=v: v[to_bits(coalitions)]
            out = {}

            def peer(game=game, n=n, index=index, k=k, out=out):
                out["r"] = ExactComputer(game, n_players=n, evaluate_game=True)(index, k)

            peer_t = peer_time(peer, n, args.repeats)
            res = out["r"]
            err = max(
                abs(mine[sum(1 << i for i in c)] - res.values[pos])
                for c, pos in res.interaction_lookup.items()
            )
            tol = 1e-6 if index == "FSII" else 1e-9  # shapiq's FSII is a penalised fit (see the docstring)
            assert err <= tol * max(1.0, float(np.abs(res.values).max())), f"{name} differs at n={n}: {err}"
            rows += [row(name, n, ours, peer_t, float(err)), *extra]

    machine = script.machine()
    script.print_table(
        rows,
        title=f"Exact Moebius and indices, float64 unless 'f32', on {machine['devices']} x {machine['device_kind']}: medians of "
        f"{args.ours_repeats} runs (ours) and {args.repeats} (shapiq; one run above n = 12)",
        digits=4,
    )

    fig, ax = plt.subplots(figsize=(6, 4))
    for workload, marker in (("moebius", "o"), ("pipeline (2^n MLP calls + Moebius)", "s")):
        sel = [r for r in rows if r["workload"] == workload]
        ax.semilogy(
            [r["n"] for r in sel], [r["ours (ms)"] for r in sel], marker + "-", label=f"ours, {workload}"
        )
        peer_sel = [r for r in sel if r["shapiq (ms)"] != "-"]
        if peer_sel:
            ax.semilogy([r["n"] for r in peer_sel], [r["shapiq (ms)"] for r in peer_sel], marker + "--",
                        label=f"shapiq, {workload}")  # fmt: skip
    ax.set(xlabel="players n", ylabel="median time (ms)", title="exact Harsanyi interactions")
    ax.legend(fontsize=7)
    fig.tight_layout()
    run.save({"rows": rows, "shapiq_installed": have_peer}, figures={"times": fig})


if __name__ == "__main__":
    main()
