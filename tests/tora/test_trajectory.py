"""tora.trajectory against slow numpy loops written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tora.trajectory import (
    flow_to_rgb,
    resample_trajectory,
    sample_sparse_tracks,
    splat_and_blur,
    track_centroids,
    trajectory_error,
    trajectory_to_flow,
)

# ----------------------------------------------------------------------------- slow references


def ref_splat(tracks, t, h, w):
    """Each track's displacement from frame i to i + 1, added at its rounded position in frame i + 1."""
    sparse = np.zeros((t, h, w, 2), np.float64)
    for k in range(tracks.shape[0]):
        for i in range(t - 1):
            x, y = int(np.round(tracks[k, i, 0])), int(np.round(tracks[k, i, 1]))
            sparse[i + 1, y, x] += tracks[k, i + 1] - tracks[k, i]
    return sparse


def ref_trajectory_to_flow(tracks, t, h, w, sigma, ks):
    """Per-pixel loops: splat, then a direct 2-D correlation with the un-normalised Gaussian."""
    sparse = ref_splat(tracks, t, h, w)
    r = ks // 2
    out = np.zeros_like(sparse)
    for f in range(t):
        for y in range(h):
            for x in range(w):
                acc = np.zeros(2)
                for dy in range(max(-r, -y), min(r, h - 1 - y) + 1):  # zero padding outside
                    for dx in range(max(-r, -x), min(r, w - 1 - x) + 1):
                        yy, xx = y + dy, x + dx
                        acc += np.exp(-(dx * dx + dy * dy) / (2 * sigma**2)) * sparse[f, yy, xx]
                out[f, y, x] = acc
    return out


def ref_colorwheel():
    """Written out from Baker et al.'s Middlebury code: 6 ramps of 15, 6, 4, 11, 13, 6 colours."""
    rows = []
    for i in range(15):
        rows.append([255, np.floor(255 * i / 15), 0])
    for i in range(6):
        rows.append([255 - np.floor(255 * i / 6), 255, 0])
    for i in range(4):
        rows.append([0, 255, np.floor(255 * i / 4)])
    for i in range(11):
        rows.append([0, 255 - np.floor(255 * i / 11), 255])
    for i in range(13):
        rows.append([np.floor(255 * i / 13), 0, 255])
    for i in range(6):
        rows.append([255, 0, 255 - np.floor(255 * i / 6)])
    return np.array(rows, np.float64)


def ref_flow_to_rgb(flow, quantize=True):
    wheel = ref_colorwheel()
    n = len(wheel)
    flat = flow.reshape(-1, 2).astype(np.float64)
    max_norm = max(np.hypot(u, v) for u, v in flat)
    out = np.zeros(flow.shape[:-1] + (3,))
    for idx in np.ndindex(*flow.shape[:-1]):
        u, v = flow[idx] / (max_norm + np.finfo(np.float32).eps)
        rad = np.hypot(u, v)
        a = np.arctan2(-v, -u) / np.pi
        fk = (a + 1) / 2 * (n - 1)
        k0 = int(np.floor(fk))
        k1 = 0 if k0 + 1 == n else k0 + 1
        f = fk - k0
        for c in range(3):
            col = (1 - f) * wheel[k0, c] / 255 + f * wheel[k1, c] / 255
            col = 1 - rad * (1 - col)
            if quantize:
                col = np.floor(255 * col) / 255
            out[idx + (c,)] = col * 2 - 1
    return out


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("n,frames", [(1, 5), (2, 7), (5, 16), (30, 8), (8, 8), (3, 1)])
def test_resample_endpoints_and_count(n, frames):
    pts = np.random.default_rng(n).uniform(0, 255, (n, 2))
    out = resample_trajectory(pts, frames)
    assert out.shape == (frames, 2)
    np.testing.assert_allclose(out[0], pts[0], atol=1e-4)
    if frames > 1:
        np.testing.assert_allclose(out[-1], pts[-1], atol=1e-4)


def test_resample_linear_and_hand_values():
    # Two points -> evenly spaced points on the segment.
    out = resample_trajectory([[0, 0], [10, 20]], 6)
    np.testing.assert_allclose(out, np.stack([np.arange(6) * 2.0, np.arange(6) * 4.0], -1), atol=1e-5)
    # Three points, 5 frames: frame 2 is the middle point, frames 1, 3 are segment midpoints.
    out = resample_trajectory([[0, 0], [4, 0], [4, 8]], 5)
    np.testing.assert_allclose(out, [[0, 0], [2, 0], [4, 0], [4, 4], [4, 8]], atol=1e-5)
    # Same count: unchanged. Subsampling keeps every other point when it lines up.
    pts = np.random.default_rng(0).uniform(0, 50, (9, 2))
    np.testing.assert_allclose(resample_trajectory(pts, 9), pts, atol=1e-4)
    np.testing.assert_allclose(resample_trajectory(pts, 5), pts[::2], atol=1e-4)


def test_resample_commutes_with_affine_maps():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 50, (7, 2))
    a = np.array([[1.5, -0.3], [0.2, 0.7]])
    b = np.array([3.0, -2.0])
    lhs = resample_trajectory(pts @ a.T + b, 11)
    rhs = resample_trajectory(pts, 11) @ a.T + b
    np.testing.assert_allclose(lhs, rhs, atol=1e-4)


def test_resample_errors():
    with pytest.raises(ValueError, match="at least one point"):
        resample_trajectory(np.zeros((0, 2)), 4)
    with pytest.raises(ValueError, match="NaN"):
        resample_trajectory([[0, 0], [np.nan, 1]], 4)
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        resample_trajectory(np.zeros((3, 2, 1)), 4)
    with pytest.raises(ValueError, match="positive integer"):
        resample_trajectory([[0, 0]], 0)


# ----------------------------------------------------------------------------- flow maps


@pytest.mark.parametrize(
    "k,t,h,w,sigma,ks",
    [(1, 4, 9, 11, 2.0, 5), (3, 5, 12, 10, 1.5, 7), (2, 3, 8, 8, 10.0, 99), (2, 2, 6, 7, 3.0, 1)],
)
def test_trajectory_to_flow_matches_loops(k, t, h, w, sigma, ks):
    rng = np.random.default_rng(k * 100 + t)
    tracks = np.stack([rng.uniform(0, w - 1, (k, t)), rng.uniform(0, h - 1, (k, t))], -1)
    tracks[0, 1] = tracks[0, 0]  # a still step
    if k > 1:
        tracks[1, 0] = tracks[0, 0]  # two tracks share a pixel: displacements add
    got = np.asarray(trajectory_to_flow(tracks, t, h, w, sigma=sigma, kernel_size=ks))
    want = ref_trajectory_to_flow(tracks, t, h, w, sigma, ks)
    assert got.shape == (t, h, w, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(got[0] == 0)


def test_trajectory_to_flow_unblurred_centre_is_displacement():
    # kernel 1 = no blur: the map holds exactly p_{i+1} - p_i at (round(y_i), round(x_i)) of frame i+1.
    tracks = np.array([[[2, 3], [5, 1], [5, 1]]], np.float32)
    f = np.asarray(trajectory_to_flow(tracks, 3, 6, 7, kernel_size=1))
    assert np.count_nonzero(f) == 2
    np.testing.assert_array_equal(f[1, 3, 2], [3, -2])
    # Centre value of the blurred map equals the displacement (kernel centre 1, not sum-normalised).
    g = np.asarray(trajectory_to_flow(tracks, 3, 6, 7, sigma=10.0, kernel_size=99))
    np.testing.assert_allclose(g[1, 3, 2], [3, -2], rtol=1e-6)


def test_splat_and_blur_weights_drop_tracks_and_jit():
    rng = np.random.default_rng(3)
    tracks = np.stack([rng.uniform(0, 9, (3, 4)), rng.uniform(0, 7, (3, 4))], -1)
    got = splat_and_blur(tracks, jnp.array([1.0, 0.0, 1.0]), 4, 8, 10, sigma=2.0, kernel_size=5)
    want = ref_trajectory_to_flow(tracks[[0, 2]], 4, 8, 10, 2.0, 5)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_trajectory_to_flow_errors_and_clip():
    ok = np.zeros((1, 3, 2))
    with pytest.raises(ValueError, match="odd"):
        trajectory_to_flow(ok, 3, 8, 8, kernel_size=98)
    with pytest.raises(ValueError, match="NaN"):
        trajectory_to_flow(np.full((1, 3, 2), np.nan), 3, 8, 8)
    with pytest.raises(ValueError, match=r"shape \[K, num_frames, 2\]"):
        trajectory_to_flow(np.zeros((1, 1, 3, 2)), 3, 8, 8)
    with pytest.raises(ValueError, match="at least one trajectory"):
        trajectory_to_flow(np.zeros((0, 3, 2)), 3, 8, 8)
    with pytest.raises(ValueError, match="resample"):
        trajectory_to_flow(np.zeros((1, 4, 2)), 3, 8, 8)
    out = np.array([[[1, 1], [20, 1], [3, 3]]], np.float32)
    with pytest.raises(ValueError, match="outside"):
        trajectory_to_flow(out, 3, 8, 8)
    clipped = trajectory_to_flow(out, 3, 8, 8, kernel_size=1, clip=True)
    np.testing.assert_array_equal(np.asarray(clipped)[1, 1, 1], [6, 0])  # x clipped to 7


@pytest.mark.parametrize("shape", [(2, 5, 6, 2), (7, 9, 2), (1, 3, 3, 4, 2)])
@pytest.mark.parametrize("quantize", [True, False])
def test_flow_to_rgb_matches_loops(shape, quantize):
    flow = np.random.default_rng(len(shape)).normal(size=shape).astype(np.float32) * 3
    flow.reshape(-1, 2)[0] = 0  # one still pixel -> white
    flow.reshape(-1, 2)[1] = [1.0, 0.0]  # arctan2(-0, -u) = pi: the top of the wheel, k1 wraps to 0
    got = np.asarray(flow_to_rgb(flow, quantize=quantize))
    want = ref_flow_to_rgb(flow, quantize)
    assert got.shape == shape[:-1] + (3,)
    if quantize:
        # Values sit on a 1/255 grid. float32 vs float64 may floor differently only where the exact
        # colour is within rounding of a grid line; anywhere else the two must agree to 1e-5.
        exact = (ref_flow_to_rgb(flow, False) + 1) / 2 * 255
        at_boundary = np.abs(exact - np.round(exact)) < 1e-3
        off = np.abs(got - want) > 1e-5
        assert not np.any(off & ~at_boundary)
        np.testing.assert_allclose(got, want, atol=2 / 255 + 1e-5)  # one 8-bit step in [-1, 1]
    else:
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert got.min() >= -1 and got.max() <= 1
    np.testing.assert_allclose(got.reshape(-1, 3)[0], [1, 1, 1], atol=1e-6)


def test_flow_to_rgb_normalises_over_the_clip():
    flow = np.zeros((2, 2, 2, 2), np.float32)
    flow[0, 0, 0] = [1, 0]
    flow[1, 0, 0] = [4, 0]
    rgb = np.asarray(flow_to_rgb(flow, quantize=False))
    # Same direction, magnitude 1/4 of the clip max vs full: the first is closer to white.
    assert np.all(rgb[0, 0, 0] >= rgb[1, 0, 0])
    assert not np.allclose(rgb[0, 0, 0], rgb[1, 0, 0])
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 2\]"):
        flow_to_rgb(np.zeros((4, 4, 3)))


def test_flow_to_rgb_against_torchvision():
    tv = pytest.importorskip("torchvision")
    import torch

    flow = np.random.default_rng(0).normal(size=(3, 6, 7, 2)).astype(np.float32)
    want = tv.utils.flow_to_image(torch.from_numpy(flow).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    got = np.asarray(flow_to_rgb(flow))
    np.testing.assert_allclose(got, want / 255.0 * 2 - 1, atol=2 / 255 + 1e-6)


# ----------------------------------------------------------------------------- sparse tracks


def test_sample_sparse_tracks_follow_a_translation():
    # A rigid translation by (1, 2) per frame everywhere: every sampled track moves by exactly that.
    t, h, w = 5, 24, 20
    flow = np.zeros((t, h, w, 2), np.float32)
    flow[1:] = [1.0, 2.0]
    for seed in range(4):
        tracks, mask = sample_sparse_tracks(jax.random.key(seed), jnp.asarray(flow), max_tracks=6, stride=4)
        tracks, mask = np.asarray(tracks), np.asarray(mask)
        assert tracks.shape == (6, t, 2) and mask.shape == (6,)
        n = int(mask.sum())
        assert 1 <= n <= 6 and np.all(mask[:n] == 1) and np.all(mask[n:] == 0)
        for k in range(6):
            for i in range(t - 1):
                want = np.minimum(tracks[k, i] + [1, 2], [w - 1, h - 1])
                np.testing.assert_allclose(tracks[k, i + 1], want, atol=1e-6)
        # Start points lie on one stride-4 grid.
        assert len({tuple(p) for p in (tracks[:, 0] % 4).astype(int)}) == 1


def test_sample_sparse_tracks_prefer_moving_points():
    # Only the top-left quadrant moves: tracks should start there (weighted by first-frame motion).
    flow = np.zeros((3, 16, 16, 2), np.float32)
    flow[1:, :8, :8] = [0.0, 1.0]
    starts = []
    for seed in range(10):
        tracks, mask = sample_sparse_tracks(jax.random.key(seed), jnp.asarray(flow), max_tracks=2, stride=2)
        starts.append(np.asarray(tracks)[0, 0])
    starts = np.array(starts)
    assert np.all(starts < 8)
    with pytest.raises(ValueError, match=r"\[T, H, W, 2\]"):
        sample_sparse_tracks(jax.random.key(0), jnp.zeros((3, 4, 4)))


# ----------------------------------------------------------------------------- error and tracker


def test_trajectory_error_hand_made():
    target = np.array([[[0, 0], [1, 1], [2, 2]]], np.float32)
    pred = np.array([[[1, 0], [1, 3], [2, 2]]], np.float32)  # L1 errors 1, 2, 0
    np.testing.assert_allclose(float(trajectory_error(pred, target)), 1.0, atol=1e-6)
    np.testing.assert_allclose(float(trajectory_error(pred, target, mask=[[1, 1, 0]])), 1.5, atol=1e-6)
    two = np.concatenate([pred, target], 0)
    np.testing.assert_allclose(
        float(trajectory_error(two, np.concatenate([target, target]), mask=[1, 0])), 1.0, atol=1e-6
    )
    with pytest.raises(ValueError, match="same shape"):
        trajectory_error(pred, target[:, :2])


def test_track_centroids_on_drawn_squares():
    t, h, w = 3, 16, 18
    bg = np.array([0.1, 0.1, 0.1])
    colors = np.array([[1.0, 0, 0], [0, 0, 1.0]])
    video = np.broadcast_to(bg, (t, h, w, 3)).copy()
    want = np.zeros((2, t, 2))
    for i in range(t):
        for k, (x0, y0) in enumerate([(2 + 3 * i, 1 + i), (10, 12 - 2 * i)]):
            video[i, y0 : y0 + 4, x0 : x0 + 4] = colors[k]
            want[k, i] = [x0 + 1.5, y0 + 1.5]
    got = np.asarray(track_centroids(video, colors, bg))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # An empty frame returns the frame centre.
    got = np.asarray(track_centroids(np.broadcast_to(bg, (1, h, w, 3)), colors[:1], bg))
    np.testing.assert_allclose(got[0, 0], [(w - 1) / 2, (h - 1) / 2])
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        track_centroids(video[0], colors, bg)


def tora_get_keypoint(rng, first_flow, lamb, reshape_size, max_sample_num):
    """Tora's `get_keypoint` (alibaba/Tora, sat/train_video.py, commit 9a23dceb905d8b224983f7a94f42a6db79c9c63b)
    in numpy: first_flow [2, H, W]; returns [[x, y]] start points."""
    h, w = reshape_size
    offset_h, offset_w = rng.integers(0, lamb), rng.integers(0, lamb)
    h_indice = np.arange(offset_h, h, lamb)
    w_indice = np.arange(offset_w, w, lamb)
    new_w = w_indice.shape[0]
    sample_flow = first_flow[..., offset_h::lamb, offset_w::lamb].reshape(2, -1)
    candidates_val = np.linalg.norm(sample_flow.astype(float), axis=0)
    candidates_val = candidates_val / candidates_val.sum()
    sample_n = rng.integers(1, max_sample_num + 1)
    sample_list = rng.choice(len(candidates_val), size=sample_n, p=candidates_val, replace=False)
    return [[w_indice[idx % new_w], h_indice[idx // new_w]] for idx in sample_list]


def test_sparse_track_starts_follow_toras_grid():
    # 80 x 80, stride 32, uniform motion: Tora's grid puts ~2.5% of the starts on the last row or column;
    # the old grid (clipped onto the edge) put about a third there.
    h = w = 80
    flow = np.zeros((3, h, w, 2), np.float32)
    flow[1:] = [0.5, 0.0]
    keys = jax.random.split(jax.random.key(0), 400)
    tracks, mask = jax.jit(jax.vmap(lambda k: sample_sparse_tracks(k, jnp.asarray(flow), max_tracks=4)))(keys)
    starts = np.asarray(tracks)[:, :, 0][np.asarray(mask) > 0]  # [N, 2]
    edge = np.mean((starts[:, 0] == w - 1) | (starts[:, 1] == h - 1))
    rng = np.random.default_rng(0)
    ref = np.array([p for _ in range(2000) for p in tora_get_keypoint(rng, flow[1].transpose(2, 0, 1), 32, (h, w), 4)])
    ref_edge = np.mean((ref[:, 0] == w - 1) | (ref[:, 1] == h - 1))
    assert ref_edge < 0.05 and abs(edge - ref_edge) < 0.03, (edge, ref_edge)
    # the same support: every start is a point of some Tora grid, offsets in [0, 32)
    assert starts.min() >= 0 and starts.max() <= 79
    assert abs(np.mean(starts[:, 1] // 32 == 2) - np.mean(ref[:, 1] // 32 == 2)) < 0.05


def test_nan_flow_and_tracks_raise():
    bad = np.zeros((3, 8, 8, 2), np.float32)
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="flow contains NaN or infinite values"):
        flow_to_rgb(bad)
    with pytest.raises(ValueError, match="flow contains NaN or infinite values"):
        sample_sparse_tracks(jax.random.key(0), jnp.asarray(bad))
    tr = np.array([[1.0, 1.0], [np.nan, 2.0]])
    with pytest.raises(ValueError, match="tracks contain NaN"):
        trajectory_to_flow(tr, 2, 8, 8)


# ----------------------------------------------------------------------------- Tora's train/inference switches


def ref_border_reflect_101(p, n):
    """OpenCV's borderInterpolate for BORDER_REFLECT_101, loop for loop (offsets may exceed the frame)."""
    if n == 1:
        return 0
    while not 0 <= p < n:
        p = -p if p < 0 else 2 * (n - 1) - p
    return p


def ref_blur_reflect(tracks, t, h, w, sigma, ks):
    """Splat as `ref_trajectory_to_flow`, then cv2.filter2D's correlation with mirrored borders."""
    sparse = ref_splat(tracks, t, h, w)
    r = ks // 2
    out = np.zeros_like(sparse)
    for y in range(h):
        for x in range(w):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy, xx = ref_border_reflect_101(y + dy, h), ref_border_reflect_101(x + dx, w)
                    out[:, y, x] += np.exp(-(dx * dx + dy * dy) / (2 * sigma**2)) * sparse[:, yy, xx]
    return out


@pytest.mark.parametrize("h,w,ks", [(7, 9, 5), (5, 6, 13)])  # the second kernel is wider than the frame
def test_blur_padding_reflect_matches_opencv_rule(h, w, ks):
    r = np.random.default_rng(ks)
    tracks = np.stack([r.uniform(0, w - 1, (2, 3)), r.uniform(0, h - 1, (2, 3))], -1)
    got = np.asarray(trajectory_to_flow(tracks, 3, h, w, sigma=1.7, kernel_size=ks, padding="reflect"))
    np.testing.assert_allclose(got, ref_blur_reflect(tracks, 3, h, w, 1.7, ks), atol=1e-4)
    zero = np.asarray(trajectory_to_flow(tracks, 3, h, w, sigma=1.7, kernel_size=ks))  # default: zero border
    np.testing.assert_allclose(zero, ref_trajectory_to_flow(tracks, 3, h, w, 1.7, ks), atol=1e-4)
    assert np.abs(got - zero).max() > 1e-3
    with pytest.raises(ValueError, match="padding must be one of"):
        trajectory_to_flow(tracks, 3, h, w, padding="edge")


def test_color_norm_per_chunk_matches_per_chunk_reference():
    r = np.random.default_rng(3)
    flow = (r.normal(size=(5, 3, 4, 2)) * r.uniform(0.1, 5.0, (5, 1, 1, 1))).astype(np.float32)
    got = np.asarray(flow_to_rgb(flow, chunk=2))  # frames {0, 1}, {2, 3}, {4}: each its own maximum
    want = np.concatenate([ref_flow_to_rgb(flow[i : i + 2]) for i in range(0, 5, 2)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.asarray(flow_to_rgb(flow[None], chunk=2))[0], want, atol=1e-6)  # batched
    np.testing.assert_allclose(np.asarray(flow_to_rgb(flow)), ref_flow_to_rgb(flow), atol=1e-6)  # per clip
    with pytest.raises(ValueError, match="chunk needs a positive frame count"):
        flow_to_rgb(flow, chunk=0)


def test_tora_config_switches_reach_the_training_condition():
    from tora.config import ToraConfig
    from tora.tora_model import motion_condition

    r = np.random.default_rng(0)
    flow = jnp.asarray(r.normal(size=(2, 4, 6, 6, 2)) * r.uniform(0.1, 3, (1, 4, 1, 1, 1)), jnp.float32)
    default = ToraConfig.tiny()
    assert (default.blur_padding, default.color_norm) == ("zero", "clip")
    key = jax.random.key(0)
    chunked = default.replace(color_norm="chunk", color_chunk=2)
    rgb, _ = motion_condition(key, flow, chunked, 1)
    np.testing.assert_allclose(np.asarray(rgb), np.asarray(flow_to_rgb(flow, chunk=2)), atol=1e-6)
    _, f_zero = motion_condition(key, flow, default, 2)
    _, f_refl = motion_condition(key, flow, default.replace(blur_padding="reflect"), 2)
    assert np.abs(np.asarray(f_zero) - np.asarray(f_refl)).max() > 1e-4  # same tracks, other border
    with pytest.raises(ValueError, match="blur_padding"):
        default.replace(blur_padding="edge")
