"""Moving objects: a synthetic video set with exact trajectories and dense flow, for Tora on a CPU.

Each clip has one or two coloured shapes (square or disc) on a grey background moving along a random
straight line or quadratic Bezier curve. Everything is known exactly: the centre track of every object,
the dense forward flow, and a caption ("a red square and a blue circle") with one-hot word features.
Pixels are in [-1, 1]; the video is rendered with exact pixel coverage (anti-aliased), so the
intensity-weighted centroid of an object is its centre.

Layouts: video [T, H, W, 3], flow [T, H, W, 2] with flow[0] = 0 and flow[i+1] at a frame-i pixel = the
displacement of whatever covers it to frame i+1 (Tora's convention), tracks [K, T, 2] (x, y).
"""

from __future__ import annotations

import numpy as np

__all__ = ["COLORS", "SHAPES", "VOCAB", "BACKGROUND", "make_clip", "make_batch", "caption_features"]

COLORS = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
}
SHAPES = ("square", "circle")
VOCAB = ("<pad>", "a", "and", *COLORS, *SHAPES)
BACKGROUND = np.zeros(3, np.float32)
MAX_CAPTION = 7  # "a red square and a blue circle"


def _coverage(shape: str, cx: float, cy: float, r: float, h: int, w: int) -> np.ndarray:
    """[H, W] fraction of each pixel (unit square around its centre) covered by the shape."""
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    if shape == "square":  # exact area of the axis-aligned square of half-side r
        cov_x = np.clip(np.minimum(xs + 0.5, cx + r) - np.maximum(xs - 0.5, cx - r), 0, 1)
        cov_y = np.clip(np.minimum(ys + 0.5, cy + r) - np.maximum(ys - 0.5, cy - r), 0, 1)
        return cov_y * cov_x
    d = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    return np.clip(r + 0.5 - d, 0, 1)  # disc of radius r, one-pixel linear edge


def _path(rng: np.random.Generator, t: int, lo: np.ndarray, hi: np.ndarray, curved: bool) -> np.ndarray:
    """[T, 2] centre positions, constant parameter speed along a line or a quadratic Bezier curve."""
    p0, p2 = rng.uniform(lo, hi), rng.uniform(lo, hi)
    while np.linalg.norm(p2 - p0) < 0.4 * np.linalg.norm(hi - lo):  # make it move visibly
        p2 = rng.uniform(lo, hi)
    s = np.linspace(0.0, 1.0, t)[:, None]
    if not curved:
        return (1 - s) * p0 + s * p2
    p1 = rng.uniform(lo, hi)
    return (1 - s) ** 2 * p0 + 2 * s * (1 - s) * p1 + s**2 * p2


def make_clip(
    rng: np.random.Generator,
    num_frames: int = 8,
    height: int = 16,
    width: int = 16,
    num_objects: int | None = None,
    radius: float = 2.5,
) -> dict:
    """One clip: {"video", "flow", "tracks", "colors", "caption", "tokens"} (numpy, float32 / int32).

    num_objects None draws 1 or 2. Objects keep fully inside the frame.
    """
    if num_objects is None:
        num_objects = int(rng.integers(1, 3))
    if num_objects not in (1, 2):
        raise ValueError(f"num_objects must be 1 or 2 (or None for either); got {num_objects}.")
    if min(height, width) < 4 * radius + 2:
        raise ValueError(f"a {width}x{height} frame is too small for objects of radius {radius}.")
    names = rng.choice(list(COLORS), size=num_objects, replace=False)
    shapes = rng.choice(SHAPES, size=num_objects)
    lo = np.array([radius + 0.5, radius + 0.5])
    hi = np.array([width - 1.5 - radius, height - 1.5 - radius])
    tracks = np.stack([_path(rng, num_frames, lo, hi, bool(rng.integers(2))) for _ in range(num_objects)])
    video = np.broadcast_to(BACKGROUND, (num_frames, height, width, 3)).copy()
    flow = np.zeros((num_frames, height, width, 2), np.float32)
    for i in range(num_frames):
        for k in range(num_objects):  # later objects are drawn on top
            cov = _coverage(shapes[k], *tracks[k, i], radius, height, width)[..., None]
            video[i] = (1 - cov) * video[i] + cov * np.array(COLORS[names[k]])
            if i + 1 < num_frames:
                flow[i + 1][cov[..., 0] > 0.5] = tracks[k, i + 1] - tracks[k, i]
    words = []
    for k in range(num_objects):
        words += (["and"] if k else []) + ["a", names[k], shapes[k]]
    tokens = np.zeros(MAX_CAPTION, np.int32)
    tokens[: len(words)] = [VOCAB.index(w) for w in words]
    return {
        "video": video.astype(np.float32),
        "flow": flow,
        "tracks": tracks.astype(np.float32),
        "colors": np.array([COLORS[n] for n in names], np.float32),
        "caption": " ".join(words),
        "tokens": tokens,
    }


def make_batch(
    seed: int, batch_size: int, num_frames: int = 8, height: int = 16, width: int = 16, **kw
) -> dict:
    """A batch of clips from one integer seed (so step s of a run is reproducible).

    Returns {"video" [B,T,H,W,3], "flow" [B,T,H,W,2], "tokens" [B,7], "y_mask" [B,7] bool, "tracks" [B,2,T,2]
    and "colors" [B,2,3] (a single object's second slot repeats the first, with "num_objects" [B])}.
    """
    rng = np.random.default_rng(seed)
    clips = [make_clip(rng, num_frames, height, width, **kw) for _ in range(batch_size)]
    pad2 = lambda a: np.concatenate([a, a[:1]]) if len(a) == 1 else a
    return {
        "video": np.stack([c["video"] for c in clips]),
        "flow": np.stack([c["flow"] for c in clips]),
        "tokens": np.stack([c["tokens"] for c in clips]),
        "y_mask": np.stack([c["tokens"] > 0 for c in clips]),
        "tracks": np.stack([pad2(c["tracks"]) for c in clips]),
        "colors": np.stack([pad2(c["colors"]) for c in clips]),
        "num_objects": np.array([len(c["tracks"]) for c in clips], np.int32),
        "captions": [c["caption"] for c in clips],
    }


def caption_features(tokens: np.ndarray, dim: int = 16) -> np.ndarray:
    """One-hot word features [B, L, dim] of caption tokens [B, L] (a stand-in for T5 on this toy task)."""
    if dim < len(VOCAB):
        raise ValueError(
            f"caption feature width must be at least the vocabulary size {len(VOCAB)}; got {dim}."
        )
    return np.eye(dim, dtype=np.float32)[np.asarray(tokens)]
