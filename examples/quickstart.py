"""jaxzoo quickstart: the shared runtime end to end, in well under a minute on a 2-core CPU.

    python examples/quickstart.py                  # 8 fake CPU devices, mesh data=4 x model=2
    python examples/quickstart.py --mesh data=-1   # pure data parallel on whatever devices exist (GPU/TPU)

It builds a small MLP whose weights carry logical axis names, creates its parameters directly sharded on a
(data, model) mesh, trains it with the jitted train step through ``jaxzoo.fit`` (progress bar, JSONL
metrics, orbax checkpoints), restores the last checkpoint into a fresh sharded state and checks that it
equals the trained one. It prints the mesh, a summary of the loss curve and the checkpoint path.
Expected (measured on a 2-core CPU, ~15 s): loss falls from about 0.9 to about 0.03 in 200 steps;
"restored == trained: True".
"""

import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-devices", type=int, default=8, help="fake CPU devices when running on a CPU")
    p.add_argument("--mesh", default="data=4,model=2", help="mesh shape, e.g. data=-1 or data=4,model=2")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--out", default=None, help="output folder (default outputs/quickstart)")
    return p.parse_args(argv)


args = parse_args()
if args.cpu_devices > 1:  # must happen before jax is imported
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.cpu_devices}"
    ).strip()

import dataclasses
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxzoo


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    d_in: int = 16  # input features
    d_hidden: int = 64  # hidden width; sharded over the "model" mesh axis via the "mlp" logical name
    d_out: int = 1  # regression targets


class MLP(nn.Module):
    cfg: MLPConfig

    @nn.compact
    def __call__(self, x):  # [B, d_in] -> [B, d_out]
        dense = lambda n, axes, name: nn.Dense(
            n,
            name=name,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
        )
        h = nn.gelu(dense(self.cfg.d_hidden, ("embed", "mlp"), "up")(x))  # [B, hidden]
        return dense(self.cfg.d_out, ("mlp", "embed"), "down")(h)


def main():
    out = jaxzoo.output_dir("quickstart", args.out)
    shutil.rmtree(out / "run", ignore_errors=True)  # a fresh run each time (fit would resume otherwise)
    shape = {k: int(v) for k, v in (kv.split("=") for kv in args.mesh.split(","))}
    mesh = jaxzoo.make_mesh(shape)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; mesh: {dict(mesh.shape)}")

    cfg = MLPConfig(d_hidden=args.hidden)
    model = MLP(cfg)
    w_true = (np.random.default_rng(0).normal(size=(cfg.d_in, cfg.d_out)) / np.sqrt(cfg.d_in)).astype(
        np.float32
    )

    def batch_fn(step):  # a reproducible batch per step, so resuming sees the same data
        x = np.random.default_rng(step).normal(size=(args.batch_size, cfg.d_in)).astype(np.float32)
        return jaxzoo.shard_batch({"x": x, "y": np.tanh(x @ w_true)}, mesh)

    def loss_fn(params, batch, rng):
        pred = model.apply({"params": params}, batch["x"])
        return jnp.mean((pred - batch["y"]) ** 2), {}

    tx = optax.adamw(optax.cosine_decay_schedule(1e-2, args.steps), weight_decay=1e-4)
    variables, _ = jaxzoo.init_sharded(model, jax.random.key(0), jnp.zeros((1, cfg.d_in)), mesh=mesh)
    state, _ = jaxzoo.create_sharded_state(variables["params"], tx, mesh)
    print(
        f"up/kernel {state.params['up']['kernel'].shape} sharded as {state.params['up']['kernel'].sharding.spec}"
    )

    step = jaxzoo.make_train_step(loss_fn, tx, mesh=mesh)
    state, history = jaxzoo.fit(
        state,
        step,
        batch_fn,
        num_steps=args.steps,
        rng=jax.random.key(1),
        workdir=out / "run",
        checkpoint_every=max(1, args.steps // 4),
        config=cfg,
        desc="quickstart",
    )
    losses = [h["loss"] for h in history]
    print(
        f"loss: first {losses[0]:.4f}, min {min(losses):.4f}, last {losses[-1]:.4f} over {len(losses)} steps"
    )

    ckpt = jaxzoo.Checkpointer(out / "run" / "checkpoints")
    fresh, _ = jaxzoo.init_sharded(model, jax.random.key(42), jnp.zeros((1, cfg.d_in)), mesh=mesh)
    target, _ = jaxzoo.create_sharded_state(fresh["params"], tx, mesh)
    restored = ckpt.restore(target)
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)))
    print(f"checkpoint: {ckpt.directory} (steps {ckpt.all_steps()}); restored == trained: {same}")
    ckpt.close()
    jaxzoo.write_json(
        out / "summary.json",
        {
            "mesh": dict(mesh.shape),
            "first_loss": losses[0],
            "last_loss": losses[-1],
            "checkpoint": str(ckpt.directory),
            "restored_equals_trained": same,
        },
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
