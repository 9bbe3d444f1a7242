"""jaxzoo quickstart: the shared runtime end to end, then one short section per package (seconds on a CPU).

    python examples/quickstart.py                  # 8 fake CPU devices, mesh data=4 x model=2
    python examples/quickstart.py --smoke          # 20 steps (what CI runs)
    python examples/quickstart.py --cpu-devices 1 --mesh data=-1   # data parallel over real devices (GPU/TPU)
    python examples/quickstart.py --packages ''    # the runtime part alone

The runtime part builds a small MLP whose weights carry logical axis names, plans its train state with
``jaxzoo.plan_state`` (parameters and Adam moments created directly sharded on a (data, model) mesh),
trains it with the jitted train step through ``jaxzoo.fit`` (progress bar, JSONL metrics, orbax
checkpoints), then rebuilds the run from its work directory alone (``jaxzoo.rebuild``: config.json +
latest checkpoint) and checks that it equals the trained state. It prints the mesh, a summary of the loss curve and the
checkpoint path. Then (``--packages``): interactions of a random game, MaxSim in float and against 1-bit
documents, a TopK SAE on toy features, prefix linear attention three ways plus generation, a trajectory
flow map plus a tiny ST-DiT forward. Results go to outputs/quickstart/results.json (the measured
figures live there); expect the loss to fall by more than 10x, "rebuilt == trained: True", both MaxSim
variants to rank the planted documents first and the three PLA forms to agree to ~1e-6.
"""

import dataclasses
import shutil
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxzoo
from jaxzoo import script


@dataclasses.dataclass(frozen=True)
class MLPConfig(jaxzoo.Config):
    """A two-layer MLP regressor."""

    d_in: int = 16  # input features
    d_hidden: int = 64  # hidden width; sharded over the "model" mesh axis via the "mlp" logical name
    d_out: int = 1  # regression targets


class MLP(nn.Module):
    config: MLPConfig

    @nn.compact
    def __call__(self, x):  # [B, d_in] -> [B, d_out]
        h = nn.gelu(jaxzoo.DenseGeneral((self.config.d_hidden,), ("embed", "mlp"), name="up")(x))  # [B, hidden]
        return jaxzoo.DenseGeneral((self.config.d_out,), ("mlp", "embed"), name="down")(h)


@dataclasses.dataclass(frozen=True)
class RunConfig(jaxzoo.Config):
    """The quickstart run: the model, its optimizer and the run length (what jaxzoo.rebuild reads back)."""

    model: MLPConfig = MLPConfig()  # the network
    optimizer: jaxzoo.OptimizerConfig = jaxzoo.OptimizerConfig(
        learning_rate=1e-2, schedule="cosine", weight_decay=1e-4
    )  # AdamW, cosine decay, warm-up 1% of the steps
    steps: int = 200  # training steps
    batch_size: int = 64  # examples per step

    def recipe(self):
        model = MLP(self.model)
        init = jaxzoo.module_init(model, jnp.zeros((1, self.model.d_in)))
        return jaxzoo.Recipe(model, init, jaxzoo.make_optimizer(self.optimizer, self.steps))


def main():
    p = script.parser(__doc__)
    p.add_argument("--steps", type=int, default=200, help="training steps")
    p.add_argument("--batch-size", type=int, default=64, help="examples per step")
    p.add_argument("--hidden", type=int, default=64, help="hidden width (sharded over model)")
    p.add_argument("--packages", default="interact,colbert,sae,jrt,tora",
                   help="comma-separated package sections to run after the runtime demo ('' for none)")
    p.set_defaults(cpu_devices=8, mesh={"data": 4, "model": 2})
    args = script.parse(p, smoke={"steps": 20})
    run = script.setup(args, "quickstart")
    out, mesh = run.out, run.mesh
    shutil.rmtree(out / "run", ignore_errors=True)  # a fresh run each time (fit would resume otherwise)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; mesh: {dict(mesh.shape)}")

    cfg = RunConfig(model=MLPConfig(d_hidden=args.hidden), steps=args.steps, batch_size=args.batch_size)
    recipe = cfg.recipe()
    w_true = (np.random.default_rng(0).normal(size=(cfg.model.d_in, cfg.model.d_out))
              / np.sqrt(cfg.model.d_in)).astype(np.float32)

    def batch_fn(step):  # a reproducible batch per step, so resuming sees the same data
        x = np.random.default_rng(step).normal(size=(cfg.batch_size, cfg.model.d_in)).astype(np.float32)
        return jaxzoo.shard_batch({"x": x, "y": np.tanh(x @ w_true)}, mesh)

    def loss_fn(params, batch, rng):
        pred = recipe.model.apply({"params": params}, batch["x"])
        return jnp.mean((pred - batch["y"]) ** 2), {}

    # abstract state -> shardings of params and Adam moments -> initialised sharded under jit
    plan = jaxzoo.plan_state(recipe.init_fn, recipe.tx, run.rng, mesh=mesh)
    kernel = plan.state.params["up"]["kernel"]
    adam = [s for s in jax.tree.leaves(plan.state.opt_state, is_leaf=lambda s: hasattr(s, "mu")) if hasattr(s, "mu")]
    mu = adam[0].mu["up"]["kernel"]
    print(f"up/kernel {kernel.shape} sharded as {kernel.sharding.spec}; its Adam moment as {mu.sharding.spec}")
    print(f"bytes per device: {plan.memory()}")

    step = jaxzoo.make_train_step(loss_fn, recipe.tx, mesh=mesh, state_sharding=plan.shardings)
    state, history = jaxzoo.fit(
        plan.state, step, batch_fn, num_steps=cfg.steps, rng=jax.random.key(1), workdir=out / "run",
        checkpoint_every=max(1, cfg.steps // 4), config=cfg, desc="quickstart", log_every=10,
    )
    losses = [h["loss"] for h in history]
    print(f"loss: first logged {losses[0]:.4f}, min {min(losses):.4f}, last {losses[-1]:.4f} "
          f"({len(losses)} logged steps of {cfg.steps})")

    rebuilt = jaxzoo.rebuild(out / "run", mesh=mesh)  # config.json + latest checkpoint -> model and state
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(rebuilt.state), jax.tree.leaves(state)))
    print(f"rebuilt from {out / 'run'}: {type(rebuilt.config).__name__} at step {rebuilt.step}; "
          f"rebuilt == trained: {same}")
    summary = {
        "mesh": dict(mesh.shape),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "bytes_per_device": plan.memory(),
        "rebuilt_equals_trained": same,
    }
    for name in filter(None, args.packages.split(",")):
        if name not in SECTIONS:
            raise ValueError(f"--packages takes names from {sorted(SECTIONS)}; got {name!r}")
        print(f"\n== {name}: {SECTIONS[name].__doc__}")
        summary[name] = SECTIONS[name]()
    run.save(summary)
    return 0 if same else 1


# ----------------------------------------------------------------------------- one short section per package
# Each runs in seconds on a CPU; the examples/ scripts are the full demonstrations.


def section_interact():
    """AND interactions of a random game over n=10 players, and the Shapley values they give."""
    import interact

    n = 10
    v = np.random.default_rng(0).normal(size=2**n)  # v(x_S) for every subset S (bit i = player i)
    i_and = interact.harsanyi(v)  # O(n 2^n) Moebius transform
    phi = interact.shapley_values(i_and)
    rebuilt = float(jnp.max(jnp.abs(interact.harsanyi_inverse(i_and) - v)))
    efficiency = float(jnp.sum(phi) - (v[-1] - v[0]))
    print(
        f"2^{n} subsets: zeta(Moebius(v)) == v to {rebuilt:.1e}; sum(Shapley) - (v(N) - v(0)) = {efficiency:.1e}"
    )
    return {"n": n, "reconstruction_error": rebuilt, "efficiency_error": efficiency}


def section_colbert():
    """MaxSim of one query against 200 documents, in float and against 1-bit documents."""
    import colbert

    rng = np.random.default_rng(0)
    unit = lambda a: (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)
    Q, D = unit(rng.normal(size=(32, 128))), rng.normal(size=(200, 64, 128))
    D = unit(D)
    D[:5, :32] = unit(
        Q + 0.3 * rng.normal(size=(5, 32, 128)) / np.sqrt(128)
    )  # 5 docs that paraphrase the query
    scores = np.asarray(colbert.maxsim(Q, D))  # [200]
    binary = np.asarray(colbert.maxsim_binary(Q, colbert.binarize(D)))
    top_f, top_b = sorted(map(int, np.argsort(-scores)[:5])), sorted(map(int, np.argsort(-binary)[:5]))
    print(f"float MaxSim top-5 {top_f}; against 1-bit documents (32x smaller) top-5 {top_b}")
    return {"float_top5": top_f, "binary_top5": top_b}


def section_sae():
    """A TopK SAE trained on toy activations built from 128 known sparse features."""
    import sae

    x, features = sae.toy.superposition_data(8192, d_in=64, n_features=128, avg_active=3.0)
    cfg = sae.SAEConfig(d_in=64, d_sae=256, architecture="topk", k=4)
    params, _ = sae.train(cfg, x, steps=300, batch_size=512, progress=False)
    report = sae.evaluate(cfg, params, x[:2048])
    mmcs = sae.toy.mmcs(params, features)
    print(
        f"TopK SAE: L0 {report['l0']:.1f}, explained variance {report['explained_variance']:.3f}, "
        f"MMCS with the true features {mmcs:.3f}"
    )
    return {"l0": report["l0"], "explained_variance": report["explained_variance"], "mmcs": mmcs}


def section_jrt():
    """Prefix linear attention three ways (quadratic, chunked, recurrent) and greedy generation."""
    import jrt

    rng = np.random.default_rng(0)
    B, L, M, H, f, dv = 1, 64, 16, 2, 8, 16
    q, k = 0.5 * rng.normal(size=(2, B, L, H, f)).astype(np.float32)
    v = rng.normal(size=(B, L, H, dv)).astype(np.float32)
    k_enc, v_enc = k[:, :M], v[:, :M]
    quad = jrt.prefix_linear_attention(q, k, v, k_enc, v_enc)
    chunked = jrt.prefix_linear_attention(q, k, v, k_enc, v_enc, chunk_size=16)
    state = jrt.prefill(k[:, :-1], v[:, :-1], k_enc, v_enc)
    last, _ = jrt.decode_step(state, q[:, -1], k[:, -1], v[:, -1])
    err_chunk = float(jnp.max(jnp.abs(quad - chunked)))
    err_rec = float(jnp.max(jnp.abs(quad[:, -1] - last)))
    cfg = jrt.JRTConfig.tiny()
    params = jrt.init_params(cfg, jax.random.key(0))
    prompt = np.arange(1, cfg.encoder_len + 1, dtype=np.int32) % cfg.vocab_size
    tokens = np.asarray(jrt.generate(params, cfg, prompt, 8))
    print(
        f"PLA chunked vs quadratic {err_chunk:.1e}, recurrent vs parallel {err_rec:.1e}; "
        f"untrained tiny JRT-RNN, greedy tokens {tokens[0].tolist()}"
    )
    return {"chunked_error": err_chunk, "recurrent_error": err_rec}


def section_tora():
    """A trajectory as a flow map, and one velocity prediction of a tiny ST-DiT."""
    import tora

    track = tora.resample_trajectory(np.array([[4.0, 4.0], [20.0, 12.0], [28.0, 28.0]]), 8)  # (x, y) pixels
    flow = tora.trajectory_to_flow(track[None], 8, 32, 32, sigma=3.0, kernel_size=15)  # [8, 32, 32, 2]
    rgb = tora.flow_to_rgb(flow)  # Middlebury colours in [-1, 1]
    cfg = tora.STDiTConfig.tiny()
    model = tora.STDiT(cfg)
    x = jnp.zeros((1, 4, 8, 8, cfg.in_channels))  # latents [B, T, H, W, C]
    t = jnp.array([0.5])
    y = jnp.zeros((1, cfg.model_max_length, cfg.caption_channels))  # caption features [B, Ly, Dy]
    variables = jax.jit(model.init)(jax.random.key(0), x, t, y)
    velocity = jax.jit(model.apply)(variables, x, t, y)
    print(
        f"flow {tuple(flow.shape)} (max |flow| {float(jnp.abs(flow).max()):.1f} px), rgb {tuple(rgb.shape)}; "
        f"ST-DiT velocity {tuple(velocity.shape)}"
    )
    return {"flow_shape": list(flow.shape), "velocity_shape": list(velocity.shape)}


SECTIONS = {
    "interact": section_interact,
    "colbert": section_colbert,
    "sae": section_sae,
    "jrt": section_jrt,
    "tora": section_tora,
}


if __name__ == "__main__":
    sys.exit(main())
