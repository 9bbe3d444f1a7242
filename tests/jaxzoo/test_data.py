"""Input pipelines: shards on disk read back exactly, loaders are deterministic, process shards are
disjoint and cover the data, and a run resumed mid-epoch sees exactly the batches of an uninterrupted one."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxzoo
from jaxzoo import data


def chunks(n_chunks=5, rows=7, width=3):
    for c in range(n_chunks):
        base = np.arange(c * rows, (c + 1) * rows)
        yield {"x": (base[:, None] * np.ones(width)).astype(np.float32), "id": base.astype(np.int32)}


def test_shards_round_trip(tmp_path):
    src = data.write_array_shards(tmp_path, chunks(), rows_per_shard=10)
    assert len(src) == 35 and src.shard_rows == [10, 10, 10, 5]
    for i in (0, 9, 10, 34):
        row = src[i]
        assert row["id"] == i and np.all(row["x"] == i) and row["x"].dtype == np.float32
    single = data.write_array_shards(tmp_path / "single", [np.arange(6).reshape(3, 2)], rows_per_shard=2)
    np.testing.assert_array_equal(single[2], [4, 5])
    with pytest.raises(IndexError):
        src[35]
    # one field across shards: memory maps per shard, or one array
    assert [len(m) for m in src.shards("id")] == [10, 10, 10, 5]
    assert isinstance(src.shards("x")[0], np.memmap)
    np.testing.assert_array_equal(src.field("id"), np.arange(35))
    assert src.field("x").shape == (35, 3)
    with pytest.raises(ValueError, match="no field 'y'"):
        src.field("y")


def test_shard_errors(tmp_path):
    with pytest.raises(ValueError, match="no chunks"):
        data.write_array_shards(tmp_path / "e", [])
    with pytest.raises(ValueError, match="same leading"):
        data.write_array_shards(tmp_path / "r", [{"a": np.zeros(3), "b": np.zeros(4)}])
    with pytest.raises(ValueError, match="the first chunk had"):
        data.write_array_shards(tmp_path / "d", [np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="rows_per_shard"):
        data.write_array_shards(tmp_path / "z", [np.zeros(2)], rows_per_shard=0)
    with pytest.raises(ValueError, match="no index.json"):
        data.ShardedArrays(tmp_path / "nothing")
    data.write_array_shards(tmp_path / "t", chunks(), rows_per_shard=10)
    shard = tmp_path / "t" / "x" / "part-00001.npy"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="truncated"):
        data.ShardedArrays(tmp_path / "t")
    (tmp_path / "t" / "index.json").write_text('{"format": 1, "shard_')
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.ShardedArrays(tmp_path / "t")


def test_loader_is_deterministic_and_each_epoch_covers_every_record(tmp_path):
    src = data.write_array_shards(tmp_path, chunks(), rows_per_shard=10)
    first = [b["id"] for b in data.make_loader(src, batch_size=5, seed=3, num_epochs=1)]
    again = [b["id"] for b in data.make_loader(src, batch_size=5, seed=3, num_epochs=1)]
    assert len(first) == 7 and all(np.array_equal(a, b) for a, b in zip(first, again))
    assert sorted(np.concatenate(first).tolist()) == list(range(35))
    assert not np.array_equal(np.concatenate(first), np.arange(35))  # shuffled
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        data.make_loader(src, batch_size=4, process_count=3, process_index=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        data.make_loader(src, batch_size=2.0)


def test_process_shards_are_disjoint_and_cover(tmp_path):
    src = data.write_array_shards(tmp_path, chunks(n_chunks=4, rows=8), rows_per_shard=16)  # 32 records
    parts = [np.concatenate([b["id"] for b in data.make_loader(src, batch_size=4, seed=1, num_epochs=1,
                                                                  process_index=i, process_count=2)])
             for i in range(2)]
    assert set(parts[0]).isdisjoint(parts[1])
    assert sorted(np.concatenate(parts).tolist()) == list(range(32))


def test_fit_resumes_a_grain_iterator_mid_epoch_exactly(tmp_path):
    src = data.write_array_shards(tmp_path / "data", chunks(), rows_per_shard=10)
    tx = optax.sgd(0.1)

    def loss_fn(params, batch, rng):
        return jnp.mean((batch["x"] @ params["w"] - batch["id"][:, None]) ** 2) * 1e-3, {}

    def fresh():
        plan = jaxzoo.plan_state(lambda r: {"w": jnp.zeros((3, 1))}, tx, jax.random.key(0))
        return plan.state

    step = jaxzoo.make_train_step(loss_fn, tx, donate=False)
    common = dict(rng=jax.random.key(0), progress=False, log_every=1)
    loader = lambda: iter(data.make_loader(src, batch_size=5, seed=7))  # 7 batches per epoch
    full, hist_full = jaxzoo.fit(fresh(), step, loader(), num_steps=10, **common)
    jaxzoo.fit(fresh(), step, loader(), num_steps=4, workdir=tmp_path / "run", checkpoint_every=2, **common)
    assert sorted(p.name for p in (tmp_path / "run" / "data_state").iterdir())[-1].startswith("step_000000004")
    resumed, hist = jaxzoo.fit(fresh(), step, loader(), num_steps=10, workdir=tmp_path / "run", **common)
    assert [r["loss"] for r in hist] == [r["loss"] for r in hist_full]
    np.testing.assert_array_equal(np.asarray(resumed.params["w"]), np.asarray(full.params["w"]))


def test_shard_batch_with_mesh_in_fit(tmp_path):
    mesh = jaxzoo.make_mesh({"data": 8})
    src = data.write_array_shards(tmp_path, chunks(n_chunks=2, rows=8), rows_per_shard=16)
    tx = optax.sgd(0.1)
    seen = []

    def loss_fn(params, batch, rng):
        seen.append(batch["x"].shape)
        return jnp.mean(batch["x"] @ params["w"]), {}

    plan = jaxzoo.plan_state(lambda r: {"w": jnp.zeros((3, 1))}, tx, jax.random.key(0), mesh=mesh)
    step = jaxzoo.make_train_step(loss_fn, tx, mesh=mesh)
    state, _ = jaxzoo.fit(plan.state, step, iter(data.make_loader(src, batch_size=8)), num_steps=2,
                          rng=jax.random.key(0), progress=False, mesh=mesh)
    assert int(state.step) == 2 and seen[0] == (8, 3)
    assert json.loads((tmp_path / "index.json").read_text())["format"] == 1
