"""TopK SAE training, jaxzoo's sae vs SAELens' own trainer, on the same activations in one run.

Workload (issue 16): d_in 512, d_sae 4096, k 32, batch 4096 tokens, ``--steps`` (300) steps, the same
learning rate (SAELens' default 3e-4) and schedule for both (constant, then linear decay to 0 over the
last 20% of steps), gradient clipping at norm 1, Adam (0.9, 0.999). Activations come from
``sae.toy.superposition_data`` (1024 ground-truth features, 32 active on average): ``--pool-batches``
distinct batches cycled in the same order for both libraries, and a held-out set for the explained variance.

- ours: ``sae.make_train_step`` (one jitted step: TopK on a free decoder rescaled by its norms, sparse
  backward, AuxK only when a latent is dead, input normalisation, dead-latent bookkeeping, metrics);
- SAELens: its real trainer, ``SAETrainer.fit()`` on a ``TopKTrainingSAE`` with the configuration a SAELens
  user gets by default (``TopKTrainingSAEConfig(d_in, d_sae, k)``: dense activations,
  ``rescale_acts_by_decoder_norm``, AuxK coefficient 1, decoder init norm 0.1, no input normalisation;
  ``SAETrainerConfig`` defaults, i.e. dead-latent window 1000 steps, no wandb). Its steps are timed between
  consecutive batches its trainer pulls from the data provider.

Every step is timed (wall clock; ours blocks on each step's metrics); steps/s = 1 / median step time
after ``--warmup`` steps, and the table gives the explained variance (pooled, held-out) after all steps,
plus the machine's load average during each library's run (the CPU may be shared).

    python benchmarks/sae_vs_saelens.py                  # CPU: ~20 min alone on 2 cores, ~1 h on a loaded one
    python benchmarks/sae_vs_saelens.py --smoke --out /tmp/x
    python benchmarks/sae_vs_saelens.py --accelerator    # one GPU (JAX CUDA + torch CUDA)

Without ``pip install sae-lens`` the table has our column only, says so, and results.json is still written.
Measured alone on this 2-core CPU (one run, SAELens 6.54.12 on torch 2.13 CPU; load average ~1.8 in both
phases, i.e. each library using both cores): ours 3.095 steps/s, SAELens 1.117 steps/s, ratio 2.77x;
explained variance after 300 steps 0.543 (ours) vs 0.430 (SAELens). Under a load of 16-22 the same script
gave 0.249 vs 0.110 steps/s (2.26x). Numbers of the last run: results.json.
"""

from __future__ import annotations

import os
import time

from jaxzoo import script

parser = script.parser(__doc__)
parser.add_argument("--steps", type=int, default=300, help="training steps per library")
parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing (compilation)")
parser.add_argument("--d-in", type=int, default=512)
parser.add_argument("--d-sae", type=int, default=4096)
parser.add_argument("--k", type=int, default=32)
parser.add_argument("--batch-size", type=int, default=4096)
parser.add_argument("--lr", type=float, default=3e-4, help="learning rate of both (SAELens' default)")
parser.add_argument("--pool-batches", type=int, default=16, help="distinct batches generated (then cycled)")
parser.add_argument("--eval-tokens", type=int, default=8192)
parser.add_argument("--device", default="cpu", help="torch device for SAELens")
SMOKE = {
    "steps": 4,
    "warmup": 1,
    "d_in": 16,
    "d_sae": 64,
    "k": 4,
    "batch_size": 64,
    "pool_batches": 2,
    "eval_tokens": 128,
}
# one H200: a Gemma-2-2B-width TopK SAE (d_in 2304, 16k latents), SAELens on the same GPU
ACCELERATOR = {"d_in": 2304, "d_sae": 16384, "k": 64, "device": "cuda"}
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


def summary(times, ev, load):
    t = np.asarray(times[args.warmup :] or times)
    return {"steps/s": float(1.0 / np.median(t)), "EV": ev, "wall s": float(np.sum(times)), "load": load}


def run_ours(pool, held_out):
    model = sae.SAEConfig(
        d_in=args.d_in, d_sae=args.d_sae, architecture="topk", k=args.k, init_samples=args.batch_size
    )
    run_cfg = sae.run_config(
        model, steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed
    )
    state = sae.init_state(run_cfg, sample=pool[: args.batch_size]).state
    step = sae.make_train_step(run_cfg)
    batches = [jax.device_put(batch_at(pool, i)) for i in range(args.pool_batches)]
    rng = jax.random.key(args.seed)
    load0, times = os.getloadavg()[0], []
    for i in range(args.steps):
        start = time.perf_counter()
        state, metrics = step(state, batches[i % args.pool_batches], rng)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - start)
    load = (load0 + os.getloadavg()[0]) / 2
    params = sae.final_params(state, model)
    x_hat = np.concatenate([np.asarray(sae.apply(model, params, c)[0]) for c in np.array_split(held_out, 4)])
    return summary(times, explained_variance(held_out, x_hat), load)


def run_saelens(pool, held_out):
    os.environ.setdefault("TQDM_DISABLE", "1")  # its trainer's progress bar (read when tqdm is imported)
    import torch
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: this torch has no CUDA; SAELens runs on the CPU")
        args.device = "cpu"
    torch.manual_seed(args.seed)
    model = TopKTrainingSAE(
        TopKTrainingSAEConfig(d_in=args.d_in, d_sae=args.d_sae, k=args.k, device=args.device)
    )
    trainer_cfg = SAETrainerConfig(
        total_training_samples=args.steps * args.batch_size,
        train_batch_size_samples=args.batch_size,
        lr=args.lr,
        lr_end=args.lr,  # what the runner config sets; SAELens' constant schedule decays from lr anyway
        lr_decay_steps=max(args.steps // 5, 1),  # as ours: constant, then linear to 0 over the last 20%
        device=args.device,
    )
    batches = [torch.from_numpy(batch_at(pool, i)).to(args.device) for i in range(args.pool_batches)]
    pulls = []

    def provider():  # the trainer pulls one batch per step: the time between pulls is one step
        i = 0
        while True:
            if args.device != "cpu":
                torch.cuda.synchronize()
            pulls.append(time.perf_counter())
            yield batches[i % args.pool_batches]
            i += 1

    trainer = SAETrainer(cfg=trainer_cfg, sae=model, data_provider=provider())
    load0 = os.getloadavg()[0]
    trainer.fit()
    if args.device != "cpu":
        torch.cuda.synchronize()
    pulls.append(time.perf_counter())
    load = (load0 + os.getloadavg()[0]) / 2
    model.eval()
    with torch.no_grad():
        x_hat = model(torch.from_numpy(held_out).to(args.device)).cpu().numpy()
    return summary(list(np.diff(pulls)), explained_variance(held_out, x_hat), load)


def main():
    pool, held_out = make_data()
    ours = run_ours(pool, held_out)
    try:
        import sae_lens  # noqa: F401
    except ImportError:
        theirs, note = None, "sae-lens is not installed (pip install sae-lens): peer columns skipped"
        print(note)
    else:
        theirs, note = run_saelens(pool, held_out), None
    work = f"TopK d_in={args.d_in} d_sae={args.d_sae} k={args.k} batch={args.batch_size}, {args.steps} steps"
    row = {
        "workload": work,
        "ours steps/s": ours["steps/s"],
        "ours EV": ours["EV"],
        "ours load": ours["load"],
    }
    if theirs is not None:
        row.update(
            {
                "SAELens steps/s": theirs["steps/s"],
                "ratio": ours["steps/s"] / theirs["steps/s"],
                "SAELens EV": theirs["EV"],
                "SAELens load": theirs["load"],
            }
        )
    machine = script.machine()
    script.print_table(
        [row],
        [
            "workload",
            "ours steps/s",
            "SAELens steps/s",
            "ratio",
            "ours EV",
            "SAELens EV",
            "ours load",
            "SAELens load",
        ],  # fmt: skip
        title=f"machine: {machine['backend']} x{machine['devices']} ({machine['device_kind']}), "
        f"{os.cpu_count()} CPUs",
    )
    run.save({"rows": [row], "ours": ours, "saelens": theirs, "peer_missing": note, "args": vars(args)})


if __name__ == "__main__":
    main()
