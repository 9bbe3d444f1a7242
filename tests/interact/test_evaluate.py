"""Masked inputs, output functions and evaluate_subsets (streamed and sharded) against naive loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import interact as it
from jaxzoo.sharding import init_sharded, make_mesh


def naive_masked(x, baseline, players, subset, player_ndim=1):
    """x_S by a loop over players and their positions."""
    lead = x.shape[:player_ndim]
    out = np.array(x, dtype=np.float64, copy=True).reshape(int(np.prod(lead)), *x.shape[player_ndim:])
    base = np.asarray(baseline, dtype=np.float64).reshape(out.shape)
    for i, group in enumerate(players):
        if not subset >> i & 1:
            for pos in group:
                out[pos] = base[pos]
    return out.reshape(x.shape)


def toy_fn(xs):
    """A nonlinear scalar of the whole input, so every position matters."""
    return jnp.sum(jnp.tanh(xs) * jnp.arange(1, xs.size + 1).reshape(xs.shape)) ** 2 / xs.size


def naive_toy(xs):
    xs = np.asarray(xs, np.float64)
    return float(np.sum(np.tanh(xs) * np.arange(1, xs.size + 1).reshape(xs.shape)) ** 2 / xs.size)


CASES = [
    # x shape, player_ndim, players (positions over the leading player_ndim axes)
    ((6,), 1, [[0], [2, 3], [5]]),  # tabular; positions 1 and 4 belong to no player
    ((5, 3), 1, [[0], [1], [2], [3], [4]]),  # tokens x embedding
    ((4, 4, 2), 2, [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]),  # 2x2 image patches
]


@pytest.mark.parametrize("shape,player_ndim,players", CASES)
def test_masked_input_matches_loop(shape, player_ndim, players):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    b = rng.normal(size=shape).astype(np.float32)
    member = jnp.asarray(it.player_matrix(players, shape, player_ndim))
    for s in range(2 ** len(players)):
        ours = it.masked_input(jnp.asarray(x), jnp.asarray(b), member, jnp.int32(s), player_ndim)
        np.testing.assert_array_equal(ours, naive_masked(x, b, players, s, player_ndim).astype(np.float32))


@pytest.mark.parametrize("shape,player_ndim,players", CASES)
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_evaluate_subsets_matches_loop(shape, player_ndim, players, batch_size):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    b = np.zeros(shape, np.float32)
    v = it.evaluate_subsets(toy_fn, x, b, players, batch_size=batch_size, player_ndim=player_ndim)
    ref = [naive_toy(naive_masked(x, b, players, s, player_ndim)) for s in range(2 ** len(players))]
    assert v.shape == (2 ** len(players),)
    np.testing.assert_allclose(v, ref, rtol=1e-5, atol=1e-5)


def test_players_as_bool_array():
    x = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    seg = np.zeros((2, 4, 4), bool)
    seg[0, :2] = True
    seg[1, 2:, :2] = True
    groups = [np.flatnonzero(seg[0]).tolist(), np.flatnonzero(seg[1]).tolist()]
    kw = dict(batch_size=4, player_ndim=2)
    v_bool = it.evaluate_subsets(toy_fn, x, np.zeros_like(x), seg, **kw)
    v_idx = it.evaluate_subsets(toy_fn, x, np.zeros_like(x), groups, **kw)
    np.testing.assert_array_equal(v_bool, v_idx)


def test_fn_args_are_dynamic():
    x = np.arange(1.0, 5.0, dtype=np.float32)
    fn = lambda xs, w: jnp.dot(xs, w)
    players = [[0], [1], [2], [3]]
    for w in [np.ones(4, np.float32), np.arange(4, dtype=np.float32)]:
        v = it.evaluate_subsets(fn, x, np.zeros(4, np.float32), players, batch_size=5, fn_args=(w,))
        ref = [sum(x[i] * w[i] for i in range(4) if s >> i & 1) for s in range(16)]
        np.testing.assert_allclose(v, ref, atol=1e-5)
        # A linear model has only first-order Harsanyi dividends.
        np.testing.assert_allclose(it.harsanyi(v)[it.subset_sizes(4) > 1], 0.0, atol=1e-5)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_log_odds_and_logit(num_classes):
    z = np.random.default_rng(num_classes).normal(size=(7, num_classes)).astype(np.float32) * 5
    for y in range(num_classes):
        p = np.exp(z.astype(np.float64))
        p = p / p.sum(-1, keepdims=True)
        ref = np.log(p[:, y]) - np.log(1 - p[:, y])
        np.testing.assert_allclose(it.log_odds(z, y), ref, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(it.logit(z, y), z[:, y])
    labels = np.arange(7) % num_classes  # one label per row
    p = np.exp(z.astype(np.float64))
    p = p[np.arange(7), labels] / p.sum(-1)
    np.testing.assert_allclose(it.log_odds(z, labels), np.log(p / (1 - p)), atol=1e-5, rtol=1e-5)


def test_log_odds_is_stable():
    z = np.array([200.0, -200.0, 0.0], np.float32)
    assert np.isfinite(it.log_odds(z, 0)) and np.isclose(it.log_odds(z, 0), 200.0, atol=1e-4)
    assert np.isclose(it.log_odds(z, 1), -400.0, rtol=1e-6)


@pytest.mark.parametrize("mesh_shape,batch_size", [({"data": 8}, 16), ({"data": 4, "model": 2}, 5)])
def test_evaluate_subsets_sharded_equals_single(mesh_shape, batch_size):
    cfg = it.MLPConfig(num_features=8, hidden=(16, 16), num_classes=3)
    model = it.MLP(cfg)
    x = np.random.default_rng(3).normal(size=8).astype(np.float32)
    params = jax.jit(model.init)(jax.random.key(0), x)
    fn = lambda xs, p, y: it.log_odds(model.apply(p, xs), y)
    players = [[i] for i in range(7)]  # position 7 is background
    single = it.evaluate_subsets(
        fn, x, np.zeros(8, np.float32), players, batch_size=batch_size, fn_args=(params, 2)
    )
    mesh = make_mesh(mesh_shape)
    if "model" in mesh_shape:  # parameters split over "model" as in training, subsets over "data"
        params, _ = init_sharded(model, jax.random.key(0), x, mesh=mesh)
    kw = dict(batch_size=batch_size, fn_args=(params, 2), mesh=mesh)
    sharded = it.evaluate_subsets(fn, x, np.zeros(8, np.float32), players, **kw)
    assert sharded.sharding.spec == jax.sharding.PartitionSpec("data")
    assert sharded.shape == (128,)
    np.testing.assert_allclose(sharded, single, atol=1e-6, rtol=1e-6)
    ref = [naive_mlp_log_odds(params, naive_masked(x, np.zeros(8), players, s), 2) for s in range(128)]
    np.testing.assert_allclose(single, ref, atol=1e-5, rtol=1e-5)


def naive_mlp_log_odds(params, x, y):
    """The MLP's log-odds of class y in float64 numpy."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), nn.unbox(params["params"]))
    h = x
    for name in ["dense_0", "dense_1"]:
        h = np.maximum(h @ p[name]["kernel"] + p[name]["bias"], 0.0)
    z = h @ p["head"]["kernel"] + p["head"]["bias"]
    others = np.delete(z, y)
    return z[y] - np.log(np.sum(np.exp(others)))


def test_subset_values_is_differentiable():
    # jax.grad through all 2^n model calls vs central finite differences of a float64 numpy loop.
    x = np.array([0.5, -1.0, 2.0], np.float32)
    b = np.array([0.1, 0.2, -0.3], np.float32)
    players = [[0], [1], [2]]

    def l1(base):
        return jnp.sum(jnp.abs(it.harsanyi(it.subset_values(toy_fn, x, base, players, batch_size=3))[1:]))

    def naive_l1(base):
        v = [naive_toy(naive_masked(x, base, players, s)) for s in range(8)]
        dividends = [
            sum((-1) ** bin(s ^ t).count("1") * v[t] for t in range(8) if t & s == t) for s in range(8)
        ]
        return sum(abs(d) for d in dividends[1:])

    g = jax.jit(jax.grad(l1))(jnp.asarray(b))
    eps, fd = 1e-6, []
    for i in range(3):
        d = np.zeros(3)
        d[i] = eps
        fd.append((naive_l1(b.astype(np.float64) + d) - naive_l1(b.astype(np.float64) - d)) / (2 * eps))
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-5)


def test_error_baseline_shape():
    with pytest.raises(ValueError, match="baseline must have the same shape as x"):
        it.evaluate_subsets(toy_fn, np.zeros(4), np.zeros(5), [[0], [1]], batch_size=4)


def test_error_players_overlap():
    with pytest.raises(ValueError, match="must not overlap; position 1 belongs to players"):
        it.evaluate_subsets(toy_fn, np.zeros(4), np.zeros(4), [[0, 1], [1, 2]], batch_size=4)


def test_error_players_outside_x():
    with pytest.raises(ValueError, match="outside x"):
        it.evaluate_subsets(toy_fn, np.zeros(4), np.zeros(4), [[0], [4]], batch_size=4)
    with pytest.raises(ValueError, match="outside x"):
        it.evaluate_subsets(toy_fn, np.zeros(4), np.zeros(4), [[-1]], batch_size=4)


def test_error_too_many_players():
    with pytest.raises(ValueError, match="At most 30 players"):
        it.player_matrix([[i] for i in range(31)], (31,))


def test_error_bool_players_shape():
    with pytest.raises(ValueError, match="bool player array must have shape"):
        it.player_matrix(np.ones((2, 3), bool), (4, 2), player_ndim=1)


def test_error_player_ndim():
    with pytest.raises(ValueError, match="player_ndim must be between 1 and x.ndim = 1"):
        it.player_matrix([[0]], (4,), player_ndim=2)


def test_error_fn_not_scalar():
    with pytest.raises(ValueError, match="fn must map one masked input to a scalar"):
        it.evaluate_subsets(lambda xs: xs, np.zeros(3), np.zeros(3), [[0]], batch_size=2)


def test_error_log_odds_one_class():
    with pytest.raises(ValueError, match="C >= 2 classes"):
        it.log_odds(np.zeros((3, 1)), 0)


def test_no_recompile_when_fn_args_change():
    from interact.evaluate import _run

    fn = lambda xs, w, y: jnp.dot(xs, w) * y
    x, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    players = [[0], [1], [2], [3]]
    it.evaluate_subsets(fn, x, b, players, batch_size=4, fn_args=(np.ones(4, np.float32), 1.0))
    before = _run._cache_size()
    for seed in range(3):
        w = np.random.default_rng(seed).normal(size=4).astype(np.float32)
        it.evaluate_subsets(fn, x + seed, b, players, batch_size=4, fn_args=(w, float(seed)))
    assert _run._cache_size() == before


def test_sharded_accepts_arrays_committed_to_one_device():
    # E.g. parameters restored from a checkpoint onto device 0, while the subsets are split over the mesh.
    dev0 = jax.devices()[0]
    x = jax.device_put(np.arange(1.0, 5.0, dtype=np.float32), dev0)
    w = jax.device_put(np.ones(4, np.float32), dev0)
    fn = lambda xs, w: jnp.tanh(xs @ w)
    players = [[0], [1], [2], [3]]
    single = it.evaluate_subsets(fn, x, np.zeros(4, np.float32), players, batch_size=8, fn_args=(w,))
    mesh = make_mesh({"data": 8})
    sharded = it.evaluate_subsets(
        fn, x, np.zeros(4, np.float32), players, batch_size=8, fn_args=(w,), mesh=mesh
    )
    np.testing.assert_allclose(sharded, single, atol=1e-6)


def test_error_empty_player_group():
    with pytest.raises(ValueError, match="player 1 is an empty group"):
        it.evaluate_subsets(lambda xs: xs.sum(), np.zeros(3), np.zeros(3), [[0], [], [2]])
    with pytest.raises(ValueError, match="player 1 owns none"):
        it.player_matrix(np.array([[True, False], [False, False]]), (2,))


@pytest.mark.parametrize("batch_size", [2.5, "8", 0, True])
def test_error_batch_size_not_a_positive_integer(batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        it.evaluate_subsets(lambda xs: xs.sum(), np.zeros(2), np.zeros(2), [[0], [1]], batch_size=batch_size)


def test_error_non_finite_model_outputs():
    with pytest.raises(ValueError, match="NaN or infinite values on 2 of the 4"):
        it.evaluate_subsets(lambda xs: jnp.log(xs[0]), np.ones(2), np.zeros(2), [[0], [1]])


def test_error_label_outside_the_classes():
    logits = np.zeros((2, 3), np.float32)
    for label in (3, -1):
        with pytest.raises(ValueError, match=r"class index in \[0, 3\)"):
            it.log_odds(logits, label)
        with pytest.raises(ValueError, match=r"class index in \[0, 3\)"):
            it.logit(logits, label)
    # Under jit the label is traced: NaN, which evaluate_subsets reports.
    with pytest.raises(ValueError, match="label outside the classes"):
        it.evaluate_subsets(
            lambda xs, y: it.log_odds(jnp.stack([xs[0], xs[1], -xs[0]]), y),
            np.ones(2), np.zeros(2), [[0], [1]], fn_args=(jnp.asarray(-1),),
        )  # fmt: skip


def test_explicit_mesh_from_make_mesh_with_padding():
    # jax.make_mesh defaults to Explicit axes; 2^2 = 4 subsets on 8 devices need padding.
    mesh = jax.make_mesh((8,), ("data",))
    x = np.array([1.0, 2.0], np.float32)
    fn = lambda xs: (xs**2).sum() + xs[0] * xs[1]  # noqa: E731
    v = it.evaluate_subsets(fn, x, np.zeros(2, np.float32), [[0], [1]], batch_size=16, mesh=mesh)
    ref = it.evaluate_subsets(fn, x, np.zeros(2, np.float32), [[0], [1]])
    np.testing.assert_allclose(v, ref)


def test_host_model_route():
    # A scikit-learn style host function (numpy only): the traced route says what to do, the host route works.
    w = np.array([0.5, -1.0, 2.0])

    def host(xs):
        return np.tanh(np.asarray(xs) @ w)  # np.asarray fails on a tracer

    x, b = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    with pytest.raises(ValueError, match="evaluate_subsets_host"):
        it.evaluate_subsets(host, x, b, [[0], [1, 2]])
    v = it.evaluate_subsets_host(host, x, b, [[0], [1, 2]], batch_size=3)
    ref = it.evaluate_subsets(lambda xs: jnp.tanh(xs @ w), x, b, [[0], [1, 2]])
    np.testing.assert_allclose(v, ref, atol=1e-6)
    assert it.masked_inputs_host(x, b, [[0], [1, 2]]).shape == (4, 3)
