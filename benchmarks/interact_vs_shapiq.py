"""Exact Harsanyi (Moebius) interactions: interact vs shapiq's ExactComputer, on the same games and model.

Two workloads, both in float64 so the values can be compared to 1e-6:
- "moebius": the transform alone, on a random game with 2^n values (ours: fast subset transform, O(n 2^n),
  jitted; shapiq: `ExactComputer(game, n)("Moebius")`, a Python loop over powersets, O(3^n)). Above
  --max-peer-n only ours runs.
- "pipeline": 2^n calls of the same small MLP on masked inputs plus the transform (ours:
  `evaluate_subsets` + `harsanyi`; shapiq: ExactComputer on a game that masks and calls the same jitted
  model on its coalition matrix in one batch).

Command: python benchmarks/interact_vs_shapiq.py [--ns 8 10 12 14] [--ours-ns 16 18 20] [--repeats 3]
Times are medians after a warm-up: --ours-repeats runs of ours, --repeats of shapiq (once above n = 12).
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
from shapiq import ExactComputer

import interact


def median_time(fn, repeats):
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


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
    return out, computer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[8, 10, 12, 14], help="n for both libraries")
    ap.add_argument("--ours-ns", type=int, nargs="+", default=[16, 18, 20], help="n for ours alone")
    ap.add_argument("--pipeline-ns", type=int, nargs="+", default=[8, 10, 12])
    ap.add_argument("--repeats", type=int, default=3, help="runs of shapiq (n <= 12)")
    ap.add_argument("--ours-repeats", type=int, default=15, help="runs of ours (milliseconds each)")
    args = ap.parse_args()

    rows = []
    rng = np.random.default_rng(0)
    for n in [*args.ns, *args.ours_ns]:
        v = rng.normal(size=2**n)
        v_dev = jnp.asarray(v)
        ours = median_time(
            lambda v_dev=v_dev: interact.harsanyi(v_dev).block_until_ready(), args.ours_repeats
        )
        mine = np.asarray(interact.harsanyi(v_dev))
        if n in args.ns:
            game = lambda coalitions, v=v: v[to_bits(coalitions)]
            ref = None

            def peer(game=game, n=n):
                nonlocal ref
                ref, _ = shapiq_moebius(game, n)

            peer_t = median_time(peer, args.repeats) if n <= 12 else _once(peer)
            err = float(np.abs(mine - ref).max())
            assert err <= 1e-6 * max(1.0, np.abs(ref).max()), f"values differ at n={n}: {err}"
            rows.append(("moebius", n, ours, peer_t, err))
        else:
            rows.append(("moebius", n, ours, None, None))

    # The same small model for both: an MLP on 32 features, explained with n players of 32 // n features.
    cfg = interact.MLPConfig(num_features=32, hidden=(64, 64), num_classes=4, dtype="float64")
    model = interact.MLP(cfg)
    x = rng.normal(size=32)
    params = jax.jit(model.init)(jax.random.key(0), x)
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
            return interact.harsanyi(v).block_until_ready()

        batched = jax.jit(lambda xs, p: interact.log_odds(model.apply(p, xs), label))

        def game(coalitions, member=member, batched=batched, baseline=baseline):
            keep = (coalitions.astype(np.float64) @ member.astype(np.float64)) > 0  # [m, 32]
            keep |= ~member.any(0)
            return np.asarray(batched(np.where(keep, x, baseline), params))

        ours = median_time(ours_pipeline, args.ours_repeats)
        result = {}

        def peer(game=game, n=n, result=result):
            result["v"], _ = shapiq_moebius(game, n)

        peer_t = median_time(peer, args.repeats) if n <= 12 else _once(peer)
        err = float(np.abs(np.asarray(ours_pipeline()) - result["v"]).max())
        rows.append(("pipeline (2^n MLP calls + Moebius)", n, ours, peer_t, err))

    device = jax.devices()[0]
    print(
        f"machine: {len(jax.devices())} x {device.platform} ({device.device_kind}); float64; medians of "
        f"{args.ours_repeats} runs (ours) and {args.repeats} (shapiq; one run above n = 12)"
    )
    head = f"| {'workload':<36} | {'n':>2} | {'ours (ms)':>10} | {'shapiq (ms)':>12} | {'ratio':>8} | {'max abs diff':>12} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for name, n, ours, peer, err in rows:
        peer_s = f"{peer * 1e3:12.1f}" if peer is not None else f"{'-':>12}"
        ratio = f"{peer / ours:7.{0 if peer / ours >= 10 else 1}f}x" if peer is not None else f"{'-':>8}"
        err_s = f"{err:12.1e}" if err is not None else f"{'-':>12}"
        print(f"| {name:<36} | {n:>2} | {ours * 1e3:10.3f} | {peer_s} | {ratio} | {err_s} |")


def _once(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
