"""TopK SAE training throughput and quality: jaxzoo's sae vs SAELens on the same synthetic activations.

Workload (the issue's): d_in 512, d_sae 4096, k 32, batch 4096 tokens, Adam with the same learning rate and
gradient clipping, activations from ``sae.toy.superposition_data`` (1024 ground-truth features, 32 active on
average). Each library trains from its own initialisation for the same number of steps on the same batches;
every step is timed after ``--warmup`` compiled/warm-up steps (``jaxzoo.script.timeit``: blocked, median) and
we report steps/s and the pooled explained variance on held-out activations.

SAELens runs its ``TopKTrainingSAE.training_forward_pass`` + backward + clip + Adam step (what its
SAETrainer does per step), with its defaults (dense activations, rescale_acts_by_decoder_norm) and, as a
second row, with ``use_sparse_activations=True``. Needs ``pip install sae-lens``: without it the table has
our column only, says so, and results.json is still written.

    python benchmarks/sae_vs_saelens.py                  # CPU: minutes
    python benchmarks/sae_vs_saelens.py --smoke --out /tmp/x
    python benchmarks/sae_vs_saelens.py --steps 200 --device cuda   # GPU (JAX CUDA + torch CUDA)

On a CPU ours ran faster per step than SAELens and started from a better explained variance (geometric-median
b_dec and input normalisation); after a dozen steps neither is converged, so compare quality at a few hundred
steps. Numbers: see results.json.
"""

from __future__ import annotations

from jaxzoo import script

parser = script.parser(__doc__)
parser.add_argument("--steps", type=int, default=12, help="timed training steps per library")
parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (compilation)")
parser.add_argument("--d-in", type=int, default=512)
parser.add_argument("--d-sae", type=int, default=4096)
parser.add_argument("--k", type=int, default=32)
parser.add_argument("--batch-size", type=int, default=4096)
parser.add_argument("--lr", type=float, default=4e-4)
parser.add_argument("--pool-batches", type=int, default=8, help="distinct batches generated (then cycled)")
parser.add_argument("--eval-tokens", type=int, default=8192)
parser.add_argument("--device", default="cpu", help="torch device for SAELens")
parser.add_argument("--skip-sparse", action="store_true", help="skip SAELens' use_sparse_activations row")
SMOKE = {
    "steps": 2,
    "warmup": 1,
    "d_in": 16,
    "d_sae": 64,
    "k": 4,
    "batch_size": 64,
    "pool_batches": 2,
    "eval_tokens": 128,
}
# one H200: a Gemma-2-2B-width TopK SAE (d_in 2304, 16k latents), SAELens on the same GPU
ACCELERATOR = {"d_in": 2304, "d_sae": 16384, "k": 64, "steps": 50, "device": "cuda"}
args = script.parse(parser, smoke=SMOKE, accelerator=ACCELERATOR)
run = script.setup(args)

import jax  # noqa: E402
import numpy as np  # noqa: E402

import sae  # noqa: E402


def make_data():
    n = args.batch_size * args.pool_batches + args.eval_tokens
    x, _ = sae.toy.superposition_data(
        n, d_in=args.d_in, n_features=2 * args.d_sae // 8, avg_active=args.k, decay=0.999, seed=args.seed
    )
    return x[: -args.eval_tokens], x[-args.eval_tokens :]


def batch_at(pool, i):
    j = i % args.pool_batches
    return pool[j * args.batch_size : (j + 1) * args.batch_size]


def explained_variance(x, x_hat):
    x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    return float(1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def run_ours(pool, held_out):
    model = sae.SAEConfig(
        d_in=args.d_in, d_sae=args.d_sae, architecture="topk", k=args.k, init_samples=args.batch_size
    )
    run_cfg = sae.run_config(
        model, steps=args.warmup + args.steps, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed
    )
    state = sae.init_state(run_cfg, sample=pool[: args.batch_size]).state
    step = sae.make_train_step(run_cfg)
    batches = [jax.device_put(batch_at(pool, i)) for i in range(args.pool_batches)]
    rng = jax.random.key(args.seed)
    box = {"state": state, "i": 0}

    def one_step():
        box["state"], metrics = step(box["state"], batches[box["i"] % args.pool_batches], rng)
        box["i"] += 1
        return metrics

    seconds = script.timeit(one_step, warmup=args.warmup, repeats=args.steps)
    params = sae.final_params(box["state"], model)
    x_hat = np.concatenate([np.asarray(sae.apply(model, params, c)[0]) for c in np.array_split(held_out, 4)])
    return 1.0 / seconds, explained_variance(held_out, x_hat)


def run_saelens(pool, held_out, sparse: bool):
    import torch
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(args.seed)
    cfg = TopKTrainingSAEConfig(
        d_in=args.d_in, d_sae=args.d_sae, k=args.k, use_sparse_activations=sparse, device=args.device
    )
    model = TopKTrainingSAE(cfg).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(args.d_sae, device=args.device)
    batches = [torch.from_numpy(batch_at(pool, i)).to(args.device) for i in range(args.pool_batches)]
    count = {"i": 0}

    def one_step():
        i = count["i"]
        count["i"] += 1
        x = batches[i % args.pool_batches]
        out = model.training_forward_pass(
            TrainStepInput(
                sae_in=x,
                coefficients={},
                dead_neuron_mask=(since_fired > 1000).bool(),
                n_training_steps=i,
                is_logging_step=False,
            )
        )
        with torch.no_grad():  # SAETrainer's dead-latent bookkeeping
            fired = out.feature_acts.bool().float().sum(-2).bool()
            fired = fired.to_dense() if fired.is_sparse else fired
            since_fired.add_(1)
            since_fired[fired] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if args.device != "cpu":
            torch.cuda.synchronize()

    seconds = script.timeit(one_step, warmup=args.warmup, repeats=args.steps)
    model.eval()
    with torch.no_grad():
        x_hat = model(torch.from_numpy(held_out).to(args.device)).cpu().numpy()
    return 1.0 / seconds, explained_variance(held_out, x_hat)


def main():
    pool, held_out = make_data()
    ours_sps, ours_ev = run_ours(pool, held_out)
    peers, note = [], None
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        note = "sae-lens is not installed (pip install sae-lens): peer columns skipped"
        print(note)
    else:
        peers.append(("SAELens (dense, defaults)", run_saelens(pool, held_out, sparse=False)))
        if not args.skip_sparse:
            try:
                peers.append(("SAELens (use_sparse_activations)", run_saelens(pool, held_out, sparse=True)))
            except Exception as err:  # torch sparse kernels are missing on some builds
                print(f"SAELens use_sparse_activations failed on this torch build: {type(err).__name__}")
    work = f"TopK d_in={args.d_in} d_sae={args.d_sae} k={args.k} batch={args.batch_size}, {args.steps} timed steps"
    machine = script.machine()
    base = {"workload": work, "ours steps/s": ours_sps, "ours EV": ours_ev}
    rows = [
        {**base, "peer": name, "peer steps/s": sps, "ratio": ours_sps / sps, "peer EV": ev}
        for name, (sps, ev) in peers
    ] or [{**base, "peer": "(missing)"}]
    script.print_table(
        rows,
        ["workload", "peer", "ours steps/s", "peer steps/s", "ratio", "ours EV", "peer EV"],
        title=f"machine: {machine['backend']} x{machine['devices']} ({machine['device_kind']})",
    )
    run.save({"rows": rows, "peer_missing": note})


if __name__ == "__main__":
    main()
