"""The small MLP that the example trains: config checks, numpy forward, sharded init and forward."""

import flax.linen as nn
import jax
import numpy as np
import pytest

import interact as it
import jaxzoo
from jaxzoo.sharding import init_sharded, make_mesh


def numpy_forward(params, x, num_hidden):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), nn.unbox(params["params"]))
    h = np.asarray(x, np.float64)
    for i in range(num_hidden):
        h = np.maximum(h @ p[f"dense_{i}"]["kernel"] + p[f"dense_{i}"]["bias"], 0.0)
    return h @ p["head"]["kernel"] + p["head"]["bias"]


@pytest.mark.parametrize("hidden", [(16,), (16, 8)])
def test_forward_matches_numpy(hidden):
    cfg = it.MLPConfig(num_features=6, hidden=hidden, num_classes=3)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    params = jax.jit(it.MLP(cfg).init)(jax.random.key(0), x)
    out = it.MLP(cfg).apply(params, x)
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out, numpy_forward(params, x, len(hidden)), atol=1e-5, rtol=1e-5)


def test_sharded_forward_equals_single_device():
    cfg = it.MLPConfig(num_features=8, hidden=(16, 16), num_classes=4)
    model = it.MLP(cfg)
    x = np.random.default_rng(1).normal(size=(8, 8)).astype(np.float32)
    mesh = make_mesh({"data": 4, "model": 2})
    variables, shardings = init_sharded(model, jax.random.key(0), x, mesh=mesh)
    kernel = variables["params"]["dense_0"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")  # the "mlp" axis is split
    single = jax.device_get(variables)
    np.testing.assert_allclose(
        jax.jit(model.apply)(variables, x), model.apply(single, x), atol=1e-6, rtol=1e-6
    )
    np.testing.assert_allclose(model.apply(single, x), numpy_forward(single, x, 2), atol=1e-5, rtol=1e-5)


def test_error_config():
    with pytest.raises(ValueError, match="hidden width must be positive"):
        it.MLPConfig(hidden=(8, 0))
    with pytest.raises(ValueError, match="must be positive"):
        it.MLPConfig(num_classes=0)


def test_error_input_width():
    cfg = it.MLPConfig(num_features=6, hidden=(4,), num_classes=2)
    with pytest.raises(ValueError, match=r"expects inputs \[..., 6\]"):
        it.MLP(cfg).init(jax.random.key(0), np.zeros((2, 5), np.float32))


def test_precision_and_logical_names():
    cfg = it.MLPConfig(num_features=6, hidden=(16, 8), num_classes=3, precision=jaxzoo.Precision.bf16())
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    variables = it.MLP(config=cfg).init(jax.random.key(0), x)
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(nn.unbox(variables)))  # params stay float32
    assert it.MLP(config=cfg).apply(variables, x).dtype == np.float32  # logits in float32, matmuls in bf16
    names = {k: v.names for k, v in variables["params"]["dense_1"].items()}
    assert names == {"kernel": ("mlp", "embed"), "bias": ("embed",)}
    assert variables["params"]["head"]["kernel"].names == ("embed", "out")
    assert variables["params"]["dense_0"]["kernel"].names == ("embed", "mlp")
