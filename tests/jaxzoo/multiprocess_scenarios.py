"""Training scenarios run both by two processes (4 CPU devices each, gloo collectives) and by one process
with 8 devices; tests/jaxzoo/test_multiprocess.py compares them. Each process feeds only its own rows of
every global batch (``jaxzoo.shard_batch`` assembles the global array)."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

import jaxzoo

STEPS = 4


def local_rows(batch: dict) -> dict:
    """This process's contiguous slice of a global batch (the rows its devices hold on the data axis)."""
    n, i = jax.process_count(), jax.process_index()
    return {k: v[i * (len(v) // n) : (i + 1) * (len(v) // n)] for k, v in batch.items()}


def gather(tree):
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def jrt_run(mesh, workdir=None, steps=STEPS):
    import jrt

    run = jrt.RunConfig(model=jrt.JRTConfig.tiny(init_std=0.3), steps=10, batch_size=8)
    vocab = run.model.vocab_size

    def batch(step):
        r = np.random.default_rng(step)
        x = r.integers(0, vocab - 1, (8, 16)).astype(np.int32)
        labels = np.roll(x, -1, axis=1)
        labels[:, -1] = jrt.IGNORE
        return jaxzoo.shard_batch(local_rows({"input_ids": x, "labels": labels}), mesh)

    plan = jrt.init_state(run, jax.random.key(0), mesh=mesh, workdir=workdir)
    step = jrt.make_train_step(run, mesh=mesh, state_sharding=plan.shardings)
    state, hist = jaxzoo.fit(plan.state, step, batch, num_steps=steps, rng=jax.random.key(1), workdir=workdir,
                             config=run if workdir is not None else None, log_every=1, progress=False)
    # held-out metrics through jaxzoo.evaluate: each process passes its own rows of 3 batches of 8
    r = np.random.default_rng(99)
    x = r.integers(0, vocab - 1, (24, 16)).astype(np.int32)
    labels = np.roll(x, -1, axis=1)
    labels[:, -1] = jrt.IGNORE
    n, i = jax.process_count(), jax.process_index()
    mine = {k: np.concatenate([v[b * 8 : (b + 1) * 8][i * (8 // n) : (i + 1) * (8 // n)] for b in range(3)])
            for k, v in {"input_ids": x, "labels": labels}.items()}
    ev = jrt.evaluate(state.params, mine, run.model, batch_size=8 // n, mesh=mesh)
    return [r["loss"] for r in hist] + [ev["loss"], ev["accuracy"]], gather(state.params)


def sae_run(mesh, workdir=None, steps=STEPS):
    import sae

    run = sae.RunConfig.tiny()
    x, _ = sae.toy.superposition_data(1024, d_in=16, n_features=32, avg_active=3, seed=0)
    x = np.asarray(x, np.float32)

    def batch(step):
        rows = x[(step * 128) % 1024 : (step * 128) % 1024 + 128]
        return jaxzoo.shard_batch(local_rows({"x": rows}), mesh)["x"]

    plan = sae.init_state(run, sample=x[:256], mesh=mesh, workdir=workdir)
    step = sae.make_train_step(run, mesh=mesh, state_sharding=plan.shardings)
    state, hist = jaxzoo.fit(plan.state, step, batch, num_steps=steps, rng=jax.random.key(1), workdir=workdir,
                             config=run if workdir is not None else None, log_every=1, progress=False)
    return [r["loss"] for r in hist], gather(state.params)


SCENARIOS = {"jrt": jrt_run, "sae": sae_run}
