"""Trajectories and flow maps: Tora's motion condition (arXiv 2407.21705, Sec. 3.2).

A trajectory is a list of (x, y) pixel positions, one per frame. Tora turns K of them into a sparse
flow map (the displacement p_{i+1} - p_i written at p_i in frame i+1, frame 0 all zero), blurs it with
an un-normalised Gaussian, and colours it with the Middlebury wheel so a video VAE can encode it.
Training samples such sparse tracks from dense flow (stage 2). All array code here is pure JAX
(jittable); the public entry points check their inputs first and raise ``ValueError`` with a sentence.

Shapes: tracks ``[K, T, 2]`` as (x, y) in pixels, flow ``[T, H, W, 2]`` as (dx, dy), video
``[T, H, W, 3]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "resample_trajectory",
    "trajectory_to_flow",
    "splat_and_blur",
    "flow_to_rgb",
    "sample_sparse_tracks",
    "trajectory_error",
    "track_centroids",
]


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def resample_trajectory(points, num_frames: int) -> np.ndarray:
    """A user's trajectory resampled to exactly ``num_frames`` points.

    Args:
      points: [N, 2] (x, y) in pixels, N >= 1, in drawing order.
    Returns:
      [num_frames, 2] float32. The points are read as a polyline parametrised by point index; frame j
      sits at index j (N-1)/(num_frames-1), linearly interpolated. This inserts points when N <
      num_frames and subsamples (interpolating) when N > num_frames; both endpoints are kept exactly,
      and resampling commutes with affine maps of the points. A single point is held still.

    Tora's `process_points` pads segments with int-truncated points and subsamples with a stride, which
    drops the exact end timing; we use the uniform reparametrisation instead (documented difference).
    """
    if not isinstance(num_frames, int | np.integer) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}.")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[-1] != 2:
        raise ValueError(f"A trajectory must have shape [N, 2] of (x, y) points, got shape {pts.shape}.")
    if pts.shape[0] == 0:
        raise ValueError("A trajectory needs at least one point, got none.")
    if not np.all(np.isfinite(pts)):
        raise ValueError("A trajectory has NaN or infinite coordinates; every point must be finite.")
    n = pts.shape[0]
    if n == 1 or num_frames == 1:
        return np.repeat(pts[:1], num_frames, axis=0).astype(np.float32)
    s = np.arange(num_frames) * (n - 1) / (num_frames - 1)  # fractional point index per frame
    lo = np.minimum(np.floor(s).astype(int), n - 2)
    frac = (s - lo)[:, None]
    out = (1.0 - frac) * pts[lo] + frac * pts[lo + 1]
    out[-1] = pts[-1]  # exact endpoint
    return out.astype(np.float32)


BLUR_PADDINGS = ("zero", "reflect")


def _reflect101(p: np.ndarray, n: int) -> np.ndarray:
    """Indices p mapped into [0, n) by mirroring without repeating the edge (OpenCV's BORDER_REFLECT_101,
    numpy's "reflect", scipy's "mirror"), repeatedly, so offsets beyond the frame work too."""
    if n == 1:
        return np.zeros_like(p)
    period = 2 * (n - 1)
    q = np.mod(p, period)
    return np.where(q < n, q, period - q)


def _gaussian_band(n: int, sigma: float, kernel_size: int, padding: str = "zero") -> jax.Array:
    """[n, n] matrix A with (A x)[i] = sum_{|d| <= kernel_size // 2} exp(-d^2 / (2 sigma^2)) x[i + d].

    Multiplying by it on both sides is the separable 2-D Gaussian correlation. padding "zero": samples
    outside the frame are 0 (Tora's training code, `conv2d(padding="same")`); "reflect": mirrored without
    repeating the edge pixel (Tora's inference code, `cv2.filter2D`'s default BORDER_REFLECT_101).
    """
    r = kernel_size // 2
    d = np.arange(-r, r + 1)
    g = np.exp(-(d.astype(np.float64) ** 2) / (2.0 * sigma**2))
    src = np.arange(n)[:, None] + d[None, :]  # [n, K] sample index of each tap
    if padding == "reflect":
        src = _reflect101(src, n)
    a = np.zeros((n, n))
    ok = (src >= 0) & (src < n)
    np.add.at(a, (np.broadcast_to(np.arange(n)[:, None], src.shape)[ok], src[ok]), np.broadcast_to(g, src.shape)[ok])
    return jnp.asarray(a, jnp.float32)


@functools.partial(jax.jit, static_argnames=("num_frames", "height", "width", "sigma", "kernel_size", "padding"))
def splat_and_blur(
    tracks: jax.Array,
    weights: jax.Array | None,
    num_frames: int,
    height: int,
    width: int,
    *,
    sigma: float = 10.0,
    kernel_size: int = 99,
    padding: str = "zero",
) -> jax.Array:
    """The kernel behind `trajectory_to_flow`; jittable, no value checks.

    tracks [K, T, 2] (x, y) in pixels; weights [K] (0 drops a track, e.g. padding) or None.
    Positions are rounded half-to-even (numpy's rule) and clipped into the frame. padding: the blur's
    border, "zero" or "reflect" (see `trajectory_to_flow`).
    Returns flow [T, H, W, 2] float32.
    """
    tracks = jnp.asarray(tracks, jnp.float32)
    k = tracks.shape[0]
    w = jnp.ones((k,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    disp = (tracks[:, 1:] - tracks[:, :-1]) * w[:, None, None]  # [K, T-1, 2]
    xi = jnp.clip(jnp.round(tracks[:, :-1, 0]), 0, width - 1).astype(jnp.int32)  # [K, T-1]
    yi = jnp.clip(jnp.round(tracks[:, :-1, 1]), 0, height - 1).astype(jnp.int32)
    ti = jnp.broadcast_to(jnp.arange(1, num_frames)[None, :], xi.shape)
    flow = jnp.zeros((num_frames, height, width, 2), jnp.float32)
    flow = flow.at[ti, yi, xi].add(disp)  # sparse displacements; several tracks add up
    if padding not in BLUR_PADDINGS:
        raise ValueError(f"padding must be one of {BLUR_PADDINGS}; got {padding!r}.")
    ah = _gaussian_band(height, sigma, kernel_size, padding)
    aw = _gaussian_band(width, sigma, kernel_size, padding)
    hi = jax.lax.Precision.HIGHEST
    return jnp.einsum("yi,tijc,xj->tyxc", ah, flow, aw, precision=hi)


def trajectory_to_flow(
    tracks,
    num_frames: int,
    height: int,
    width: int,
    *,
    sigma: float = 10.0,
    kernel_size: int = 99,
    clip: bool = False,
    padding: str = "zero",
) -> jax.Array:
    """K trajectories -> Tora's blurred sparse flow map.

    Args:
      tracks: [K, num_frames, 2] (x, y) in pixels (or [num_frames, 2] for one trajectory).
      sigma, kernel_size: the Gaussian exp(-(dx^2+dy^2)/(2 sigma^2)), centre value 1 (not normalised
        to sum 1, as Tora's kernel), odd size.
      padding: the blur's border. "zero" (default): Tora's training code (`get_trajs` /
        `get_flow_from_points` in sat/train_video.py, `conv2d(..., padding="same")`); "reflect": Tora's
        inference code (`process_traj` in sat/utils/flow_utils.py, `cv2.filter2D` with OpenCV's default
        BORDER_REFLECT_101), which adds mirrored mass within kernel_size // 2 pixels of the frame edge.
      clip: clip points outside the frame into it instead of raising.
    Returns:
      flow [num_frames, height, width, 2] float32: frame 0 zero; frame i+1 holds p_{i+1} - p_i of every
      trajectory at pixel (round(y_i), round(x_i)) (summed where trajectories meet), then blurred.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    if padding not in BLUR_PADDINGS:
        raise ValueError(f"padding must be one of {BLUR_PADDINGS}; got {padding!r}.")
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"num_frames, height and width must be positive, got {(num_frames, height, width)}.")
    if not isinstance(tracks, jax.Array):
        tracks = np.asarray(tracks, np.float64)
    if tracks.ndim == 2:
        tracks = tracks[None]
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise ValueError(
            f"tracks must have shape [K, num_frames, 2] of (x, y) pixels, got shape {tuple(tracks.shape)}."
        )
    if tracks.shape[0] == 0 or tracks.shape[1] == 0:
        raise ValueError(f"tracks must hold at least one trajectory with points, got shape {tracks.shape}.")
    if tracks.shape[1] != num_frames:
        raise ValueError(
            f"tracks have {tracks.shape[1]} points per trajectory but num_frames is {num_frames}; "
            "resample them with tora.resample_trajectory first."
        )
    if _is_concrete(tracks):
        t = np.asarray(tracks, np.float64)
        if not np.all(np.isfinite(t)):
            raise ValueError("tracks contain NaN or infinite coordinates; every point must be finite.")
        r = np.round(t)
        outside = (r[..., 0] < 0) | (r[..., 0] > width - 1) | (r[..., 1] < 0) | (r[..., 1] > height - 1)
        if outside.any() and not clip:
            k, i = np.argwhere(outside)[0]
            raise ValueError(
                f"Trajectory {k} point {i} at (x, y) = {tuple(t[k, i])} lies outside the {width}x{height} "
                "frame; pass clip=True to clip it into the frame."
            )
    tracks = jnp.asarray(tracks, jnp.float32)
    if clip:
        tracks = jnp.stack(
            [jnp.clip(tracks[..., 0], 0, width - 1), jnp.clip(tracks[..., 1], 0, height - 1)], -1
        )
    return splat_and_blur(
        tracks, None, num_frames=num_frames, height=height, width=width, sigma=sigma, kernel_size=kernel_size,
        padding=padding,
    )


def _make_colorwheel() -> np.ndarray:
    """The Middlebury colour wheel [55, 3] in 0..255 (Baker et al. 2011, as torchvision builds it)."""
    ry, yg, gc, cb, bm, mr = 15, 6, 4, 11, 13, 6
    wheel = np.zeros((ry + yg + gc + cb + bm + mr, 3))
    c = 0
    wheel[c : c + ry, 0] = 255
    wheel[c : c + ry, 1] = np.floor(255 * np.arange(ry) / ry)
    c += ry
    wheel[c : c + yg, 0] = 255 - np.floor(255 * np.arange(yg) / yg)
    wheel[c : c + yg, 1] = 255
    c += yg
    wheel[c : c + gc, 1] = 255
    wheel[c : c + gc, 2] = np.floor(255 * np.arange(gc) / gc)
    c += gc
    wheel[c : c + cb, 1] = 255 - np.floor(255 * np.arange(cb) / cb)
    wheel[c : c + cb, 2] = 255
    c += cb
    wheel[c : c + bm, 2] = 255
    wheel[c : c + bm, 0] = np.floor(255 * np.arange(bm) / bm)
    c += bm
    wheel[c : c + mr, 2] = 255 - np.floor(255 * np.arange(mr) / mr)
    wheel[c : c + mr, 0] = 255
    return wheel.astype(np.float32)


COLORWHEEL = _make_colorwheel()


@functools.partial(jax.jit, static_argnames=("quantize", "chunk"))
def _flow_to_rgb(flow: jax.Array, quantize: bool, chunk: int | None = None) -> jax.Array:
    norms = jnp.sqrt(jnp.sum(flow**2, axis=-1))  # [..., T, H, W]
    if chunk is None:
        max_norm = jnp.max(norms)
    else:  # one maximum per group of `chunk` consecutive frames (axis -4 of the flow)
        t = flow.shape[-4]
        per_frame = jnp.max(norms, axis=(-2, -1))  # [..., T]
        groups = jnp.arange(t) // chunk
        same = groups[:, None] == groups[None, :]  # [T, T]
        per_chunk = jnp.max(jnp.where(same, per_frame[..., None, :], 0.0), axis=-1)  # [..., T]
        max_norm = per_chunk[..., None, None, None]
    f = flow / (max_norm + np.finfo(np.float32).eps)
    norm = jnp.sqrt(jnp.sum(f**2, axis=-1))  # [..., H, W]
    wheel = jnp.asarray(COLORWHEEL) / 255.0  # [55, 3]
    ncols = wheel.shape[0]
    a = jnp.arctan2(-f[..., 1], -f[..., 0]) / jnp.pi
    fk = (a + 1.0) / 2.0 * (ncols - 1)
    k0 = jnp.floor(fk).astype(jnp.int32)
    k1 = jnp.where(k0 + 1 == ncols, 0, k0 + 1)
    frac = (fk - k0)[..., None]
    col = (1.0 - frac) * wheel[k0] + frac * wheel[k1]  # [..., H, W, 3]
    col = 1.0 - norm[..., None] * (1.0 - col)
    if quantize:
        col = jnp.floor(255.0 * col) / 255.0
    return jnp.clip(col * 2.0 - 1.0, -1.0, 1.0)  # XLA may turn /255 into *(1/255): 1 + 1 ulp


COLOR_NORMS = ("clip", "chunk")


def flow_to_rgb(flow: jax.Array, *, quantize: bool = True, chunk: int | None = None) -> jax.Array:
    """Flow [..., H, W, 2] -> RGB [..., H, W, 3] in [-1, 1] (Middlebury wheel, as `torchvision.utils.flow_to_image`).

    chunk None (default): the flow is divided by its largest vector norm over the whole array passed in (the
    whole clip: Tora's inference code, `flow_to_image` of the clip in sat/sample_video.py), plus float32
    eps. chunk k: the frames (axis -4 of [..., T, H, W, 2]) are split into consecutive groups of k, each
    divided by its own largest norm (Tora's training code: `flow_to_image_in_batches` with
    raft_batchsize = max(B T // 20, 1) frames, 2 for its 49-frame clips at batch 1). Zero flow is white
    (1, 1, 1). With ``quantize`` (default) the colour is floored to 8 bits as torchvision's uint8 image
    is, then mapped ``/255*2-1`` as Tora feeds its VAE.
    """
    flow = flow if hasattr(flow, "ndim") else np.asarray(flow, np.float32)
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must have shape [..., H, W, 2], got shape {tuple(flow.shape)}.")
    if chunk is not None and (flow.ndim < 4 or int(chunk) < 1):
        raise ValueError(
            f"chunk needs a positive frame count and flow [..., T, H, W, 2]; got chunk={chunk}, shape "
            f"{tuple(flow.shape)}."
        )
    _check_finite("flow", flow)
    return _flow_to_rgb(jnp.asarray(flow, jnp.float32), quantize, None if chunk is None else int(chunk))


def _check_finite(name: str, a) -> None:
    """ValueError when a concrete array holds NaN or inf (skipped while tracing)."""
    if _is_concrete(a) and not np.all(np.isfinite(np.asarray(a))):
        raise ValueError(f"{name} contains NaN or infinite values; every vector must be finite.")


def sample_sparse_tracks(
    rng: jax.Array,
    flow: jax.Array,
    *,
    max_tracks: int = 16,
    stride: int = 32,
) -> tuple[jax.Array, jax.Array]:
    """Tora's stage-2 condition: sparse trajectories drawn from dense flow (`sample_flow` in its code).

    Grid points as Tora's `get_keypoint` (sat/train_video.py): rows range(off_y, H, stride) and columns
    range(off_x, W, stride) with a random offset in [0, stride); N ~ U{1..max_tracks} of them drawn without
    replacement with probability proportional to the first-frame flow magnitude (|flow[1]| + 1e-6, so a
    still clip samples uniformly); each is propagated through the frames by the flow at its rounded
    position (clipped into the frame). Jittable: the track count is fixed to ``max_tracks`` and a mask
    marks the N real ones.

    Args:
      flow: dense flow [T, H, W, 2] in our layout (flow[i+1] at a frame-i pixel moves it to frame i+1).
    Returns:
      tracks [max_tracks, T, 2] (x, y) float32 and mask [max_tracks] float32 (1 for real tracks).
    """
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must have shape [T, H, W, 2], got shape {tuple(flow.shape)}.")
    _check_finite("flow", flow)
    t, h, w, _ = flow.shape
    k_off, k_n, k_pick = jax.random.split(rng, 3)
    sy, sx = min(stride, h), min(stride, w)
    gy, gx = -(-h // sy), -(-w // sx)  # ceil: the most grid rows / cols any offset gives
    off = jax.random.randint(k_off, (2,), 0, jnp.array([sy, sx]))
    # Tora's get_keypoint: rows range(offset_h, H, stride), cols range(offset_w, W, stride); points past the
    # frame do not exist (weight 0), they are not moved onto the last row or column
    ys = jnp.arange(gy) * sy + off[0]
    xs = jnp.arange(gx) * sx + off[1]
    yy, xx = jnp.meshgrid(ys, xs, indexing="ij")
    yy, xx = yy.reshape(-1), xx.reshape(-1)  # [G]
    valid = (yy < h) & (xx < w)
    yy, xx = jnp.minimum(yy, h - 1), jnp.minimum(xx, w - 1)
    first = flow[1] if t > 1 else flow[0]
    mag = jnp.where(valid, jnp.sqrt(jnp.sum(first[yy, xx] ** 2, -1)) + 1e-6, 0.0)
    g = yy.shape[0]
    m = min(max_tracks, g)
    # without replacement (Gumbel top-k): the zero-weight points come after every real one
    pick = jax.random.choice(k_pick, g, (m,), replace=False, p=mag / mag.sum())
    n = jax.random.randint(k_n, (), 1, jnp.minimum(m, valid.sum()) + 1)
    mask = (jnp.arange(m) < n).astype(jnp.float32)
    p0 = jnp.stack([xx[pick], yy[pick]], -1).astype(jnp.float32)  # [m, 2]

    def advance(p, f_next):  # f_next [H, W, 2]: flow into the next frame
        xi = jnp.clip(jnp.round(p[:, 0]), 0, w - 1).astype(jnp.int32)
        yi = jnp.clip(jnp.round(p[:, 1]), 0, h - 1).astype(jnp.int32)
        q = p + f_next[yi, xi]
        q = jnp.stack([jnp.clip(q[:, 0], 0, w - 1), jnp.clip(q[:, 1], 0, h - 1)], -1)
        return q, q

    _, rest = jax.lax.scan(advance, p0, flow[1:])  # [T-1, m, 2]
    tracks = jnp.concatenate([p0[None], rest], 0).transpose(1, 0, 2)  # [m, T, 2]
    if m < max_tracks:  # fewer grid points than tracks: pad with masked copies
        pad = max_tracks - m
        tracks = jnp.concatenate([tracks, jnp.repeat(tracks[:1], pad, 0)], 0)
        mask = jnp.concatenate([mask, jnp.zeros((pad,), jnp.float32)])
    return tracks, mask


def trajectory_error(pred_tracks, target_tracks, mask=None) -> jax.Array:
    """TrajError: mean L1 distance |dx| + |dy| in pixels between predicted and target points.

    Args:
      pred_tracks, target_tracks: [..., T, 2] (x, y), same shape.
      mask: optional [...] or [..., T] weights (1 = counted).
    Returns:
      a scalar: the mean over all (masked) points of |x - x'| + |y - y'|.
    """
    p = jnp.asarray(pred_tracks, jnp.float32)
    q = jnp.asarray(target_tracks, jnp.float32)
    if p.shape != q.shape or p.ndim < 2 or p.shape[-1] != 2:
        raise ValueError(
            f"pred_tracks and target_tracks must have the same shape [..., T, 2], got {p.shape} and {q.shape}."
        )
    d = jnp.sum(jnp.abs(p - q), -1)  # [..., T]
    if mask is None:
        return jnp.mean(d)
    m = jnp.asarray(mask, jnp.float32)
    if m.ndim == d.ndim - 1:
        m = m[..., None]
    m = jnp.broadcast_to(m, d.shape)
    return jnp.sum(d * m) / jnp.maximum(jnp.sum(m), 1.0)


def track_centroids(video: jax.Array, colors: jax.Array, background: jax.Array) -> jax.Array:
    """The simple tracker for the synthetic data: an intensity-weighted centroid per frame and object.

    Each pixel's weight for object k is clip(1 - |v - c_k| / |b - c_k|, 0, 1): 1 on the object's colour
    c_k, 0 at the background colour b or farther, linear in between (so on an anti-aliased render it is
    the pixel's coverage and the centroid is the object's centre). A frame with no weight returns the frame centre.

    Args:
      video: [T, H, W, 3] (any value range, same as colors/background); colors [K, 3]; background [3].
    Returns:
      tracks [K, T, 2] (x, y) in pixels.
    """
    video = jnp.asarray(video, jnp.float32)
    colors = jnp.asarray(colors, jnp.float32)
    background = jnp.asarray(background, jnp.float32)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must have shape [T, H, W, 3], got shape {tuple(video.shape)}.")
    if colors.ndim != 2 or colors.shape[-1] != 3:
        raise ValueError(f"colors must have shape [K, 3], got shape {tuple(colors.shape)}.")
    _, h, w, _ = video.shape
    dist = jnp.linalg.norm(video[None] - colors[:, None, None, None], axis=-1)  # [K, T, H, W]
    ref = jnp.linalg.norm(background[None] - colors, axis=-1)[:, None, None, None]  # [K, 1, 1, 1]
    wt = jnp.clip(1.0 - dist / jnp.maximum(ref, 1e-6), 0.0, 1.0)
    total = wt.sum((-2, -1))  # [K, T]
    ys, xs = jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32)
    cx = jnp.einsum("kthw,w->kt", wt, xs) / jnp.maximum(total, 1e-12)
    cy = jnp.einsum("kthw,h->kt", wt, ys) / jnp.maximum(total, 1e-12)
    empty = total <= 1e-12
    cx = jnp.where(empty, (w - 1) / 2.0, cx)
    cy = jnp.where(empty, (h - 1) / 2.0, cy)
    return jnp.stack([cx, cy], -1)
