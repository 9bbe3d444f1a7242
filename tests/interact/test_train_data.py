"""interact's training cost accounting and its grain (jaxzoo.data) input route."""

import jax
import numpy as np
import pytest

import interact as it
import jaxzoo
import jaxzoo.data
from jaxzoo.flops import xla_flops


def tiny_data(n=32, features=8, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32)


@pytest.mark.parametrize("hidden", [(16, 16), (64, 32, 48)])
def test_flops_per_example_matches_xla(hidden):
    run_cfg = it.RunConfig(model=it.MLPConfig(num_features=24, hidden=hidden, num_classes=10), batch_size=8)
    params = it.init_state(run_cfg).state.params
    model = it.MLP(config=run_cfg.model)
    x, y = tiny_data(8, 24, 10)
    # loss + grad (forward and backward), without the optimizer's O(params) update
    grad_fn = jax.grad(lambda p, b: it.loss_fn(model, p, b)[0])
    xla = xla_flops(grad_fn, params, {"x": x, "y": y})
    ours = run_cfg.batch_size * it.flops_per_example(run_cfg)
    assert abs(ours - xla) / xla < 0.2, (ours, xla)
    widths = (24, *hidden, 10)
    assert it.flops_per_example(run_cfg.model) == 6 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def test_flops_per_example_bad_input():
    with pytest.raises(ValueError, match="RunConfig or an MLPConfig"):
        it.flops_per_example(3)


def test_train_from_shards_logs_throughput_and_resumes(tmp_path):
    x, y = tiny_data()
    source = jaxzoo.data.write_array_shards(tmp_path / "data", [{"x": x, "y": y}], rows_per_shard=10)
    run_cfg = it.RunConfig.tiny().replace(steps=6)
    full, hist = it.train(run_cfg, source, log_every=2, progress=False)
    assert {"examples_per_s", "flops_per_s"} <= set(hist[-1])
    it.train(run_cfg, source, workdir=tmp_path / "run", stop_at=3, log_every=1, progress=False)
    resumed, _ = it.train(run_cfg, jaxzoo.data.ShardedArrays(tmp_path / "data"), workdir=tmp_path / "run",
                          log_every=1, progress=False)  # fmt: skip
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_train_from_shards_bad_fields(tmp_path):
    x, _ = tiny_data()
    source = jaxzoo.data.write_array_shards(tmp_path / "data", [{"x": x}])
    with pytest.raises(ValueError, match="fields x"):
        it.train(it.RunConfig.tiny(), source, progress=False)
