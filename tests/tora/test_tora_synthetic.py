"""tora.synthetic: exact tracks, consistent flow, captions; the tracker recovers the tracks."""

import numpy as np
import pytest

from tora.synthetic import BACKGROUND, COLORS, VOCAB, caption_features, make_batch, make_clip
from tora.trajectory import track_centroids, trajectory_error


@pytest.mark.parametrize("frames,size", [(8, 16), (5, 20)])
def test_clip_tracks_flow_and_caption(frames, size):
    rng = np.random.default_rng(frames)
    for _ in range(3):
        c = make_clip(rng, frames, size, size)
        k = len(c["tracks"])
        assert c["video"].shape == (frames, size, size, 3) and c["flow"].shape == (frames, size, size, 2)
        assert c["tracks"].shape == (k, frames, 2) and np.all(c["flow"][0] == 0)
        words = c["caption"].split()
        assert words[0] == "a" and len(words) == 3 * k + (k - 1)
        assert list(c["tokens"][: len(words)]) == [VOCAB.index(w) for w in words]
        # The colour named in the caption is the colour of the object drawn at its centre.
        top = c["tracks"][-1]  # the last object is drawn on top
        for i in range(frames):
            x, y = np.round(top[i]).astype(int)
            np.testing.assert_allclose(c["video"][i, y, x], COLORS[words[-2]], atol=1e-6)
            if i + 1 < frames:  # flow at the object's pixel in frame i moves it to frame i+1
                np.testing.assert_allclose(c["flow"][i + 1, y, x], top[i + 1] - top[i], atol=1e-5)
        # Nothing moves off the objects.
        still = np.all(np.abs(c["video"] - BACKGROUND).sum(-1) < 1e-6, axis=0)
        assert np.all(c["flow"][:, still] == 0)


def test_tracker_recovers_single_object_tracks():
    b = make_batch(0, 8, 8, 16, 16, num_objects=1)
    for i in range(8):
        got = np.asarray(track_centroids(b["video"][i], b["colors"][i, :1], BACKGROUND))
        err = float(trajectory_error(got, b["tracks"][i, :1]))
        assert err < 0.05, (b["captions"][i], err)  # exact for squares; discs have a linear 1-px edge


def test_batch_and_caption_features():
    b = make_batch(1, 4, 6, 16, 16)
    assert b["video"].shape == (4, 6, 16, 16, 3) and b["tracks"].shape == (4, 2, 6, 2)
    assert b["y_mask"].shape == (4, 7) and np.all(b["y_mask"].sum(1) == np.where(b["num_objects"] == 1, 3, 7))
    y = caption_features(b["tokens"], 16)
    assert y.shape == (4, 7, 16) and np.all(y.sum(-1) == 1)
    np.testing.assert_array_equal(make_batch(1, 4, 6, 16, 16)["video"], b["video"])  # seeded
    with pytest.raises(ValueError, match="at least the vocabulary size"):
        caption_features(b["tokens"], 4)
    with pytest.raises(ValueError, match="num_objects must be 1 or 2"):
        make_clip(np.random.default_rng(0), num_objects=3)
    with pytest.raises(ValueError, match="too small"):
        make_clip(np.random.default_rng(0), 4, 8, 8)
