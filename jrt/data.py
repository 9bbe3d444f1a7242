"""Synthetic recall tasks: MQAR (zoology) and set disjointness (JRT), plus their JRT-Prompt variants.

Every generator returns a batch dict of numpy arrays, ``{"input_ids": int32 [N, L], "labels": int32 [N, L]}``,
with ``labels[:, i]`` the target for position ``i`` (the next token) and ``-100`` where nothing is scored.

- ``mqar``: multi-query associative recall as ``zoology/data/multiquery_ar.py`` builds it. Given the same
  ``seed`` it draws keys, values and gaps with the same numpy calls in the same order as zoology's
  ``np.random.seed(seed)`` run, so with ``random_non_queries=False`` the arrays are identical; the filler
  tokens differ because zoology draws them with ``torch.randint``. ``num_passes > 1`` (the context written
  ``num_passes`` times, which crashes upstream with a broadcast error) works here.
- ``set_disjointness``: the JRT paper's synthetic (``synthetic/zoology/data/non_autoreg.py``): two sets of
  tokens that share exactly one element, and the model must name it after reading both. The order of the
  two sets is the argument order, so ``(4, 16)`` is "short set first" and ``(16, 4)`` "long set first".
  ``target="binary"`` is our variant for the literal question "do they intersect?".
- ``repeat_context``: JRT-Prompt on either task, the context read ``times`` times before the queries.
- ``recall_accuracy``: zoology's metric (per-example mean over scored positions, then mean over examples).
- ``batch_iterator``: a ``batch_fn(step) -> batch`` over a generated data set, reshuffled every epoch.

Context lengths (the prefix a JRT-RNN should read non-causally, ``cfg.encoder_len``):
``2 * num_kv_pairs * num_passes`` for MQAR, ``first_len + second_len + 2`` for set disjointness.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

IGNORE = -100  # label of positions the loss and the metric skip

# Set-disjointness special tokens, as in the JRT release.
SD_MASK, SD_PREFIX, SD_SEP_SETS, SD_SEP_ANSWER = 0, 1, 2, 3
SD_NO, SD_YES = 4, 5  # answers of target="binary" (our variant; the release only has target="token")


def mqar(
    num_examples: int,
    *,
    seq_len: int = 64,
    num_kv_pairs: int = 8,
    vocab_size: int = 8192,
    power_a: float = 0.01,
    num_passes: int = 1,
    random_non_queries: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Multi-query associative recall (Arora et al., Zoology, 2023), built as zoology builds it.

    Layout of one example (``N = num_kv_pairs``, ``C = 2 * N * num_passes`` the context length)::

        input_ids: k1 v1 k2 v2 ... kN vN [x num_passes] | query region of L - C tokens
        labels:    -100 ...                               v_i at the position of each query key k_i

    Keys come from ``[1, vocab/2)`` and values from ``[vocab/2, vocab)``, both unique within an example.
    Every key is queried exactly once, at offset ``2 * gap_i`` into the query region, where the gaps are
    drawn without replacement from ``[0, (L - C) // 2)`` with ``p(g) ∝ (g + 1) ** (power_a - 1)``: most
    queries come soon after the context. Every other query-region token is filler, 0 or, with
    ``random_non_queries``, uniform in ``[0, vocab)`` (which may repeat a key; zoology does the same).

    Args:
      num_examples: number of sequences.
      seq_len: L, even.
      num_kv_pairs: N, the number of key-value pairs, each queried once.
      vocab_size: V > L; zoology's default 8192.
      power_a: power-law exponent of the query gaps (1.0 = uniform).
      num_passes: how many times the context is written (JRT-style repetition); needs
        ``2 * N * num_passes + 2 * N <= L``.
      random_non_queries: replace filler zeros by uniform random tokens (zoology default True).
      seed: seed of a ``np.random.RandomState`` (the stream ``np.random.seed(seed)`` gives zoology).

    Returns:
      ``{"input_ids": int32 [num_examples, L], "labels": int32 [num_examples, L]}``.
    """
    if num_examples < 1:
        raise ValueError(f"mqar needs num_examples >= 1, got {num_examples}.")
    if num_kv_pairs < 1 or num_passes < 1:
        raise ValueError(
            f"mqar needs num_kv_pairs >= 1 and num_passes >= 1, got {num_kv_pairs} and {num_passes}."
        )
    if seq_len % 2 != 0:
        raise ValueError(f"mqar needs an even seq_len (keys and values come in pairs), got {seq_len}.")
    if vocab_size <= seq_len:
        raise ValueError(f"mqar needs vocab_size > seq_len, got vocab_size={vocab_size}, seq_len={seq_len}.")
    if 2 * num_kv_pairs * num_passes + 2 * num_kv_pairs > seq_len:
        raise ValueError(
            f"mqar needs 2 * num_kv_pairs * (num_passes + 1) <= seq_len to fit the context and one query "
            f"slot per key, got num_kv_pairs={num_kv_pairs}, num_passes={num_passes}, seq_len={seq_len}."
        )
    if power_a <= 0:
        raise ValueError(f"mqar needs power_a > 0, got {power_a}.")

    rng = np.random.RandomState(seed)
    n, kv, half = num_examples, num_kv_pairs, vocab_size // 2
    context_len = 2 * kv * num_passes

    # Same draws, same order as zoology: all keys, then all values, then all gaps, row by row.
    key_choices = np.arange(1, half)
    value_choices = np.arange(half, vocab_size)
    keys = np.stack([rng.choice(key_choices, size=kv, replace=False) for _ in range(n)])  # [n, N]
    values = np.stack([rng.choice(value_choices, size=kv, replace=False) for _ in range(n)])  # [n, N]

    space = (seq_len - context_len) // 2
    p = power_a * np.arange(1, space + 1) ** (power_a - 1)
    p = p / p.sum()
    gaps = np.stack([rng.choice(np.arange(space), size=kv, replace=False, p=p) for _ in range(n)])  # [n, N]

    pairs = np.zeros((n, 2 * kv), dtype=np.int64)
    pairs[:, 0::2] = keys
    pairs[:, 1::2] = values
    context = np.tile(pairs, (1, num_passes))  # [n, C]

    queries = np.zeros((n, seq_len - context_len), dtype=np.int64)  # [n, L - C]
    np.put_along_axis(queries, 2 * gaps, keys, axis=1)
    input_ids = np.concatenate([context, queries], axis=1)  # [n, L]

    # The value is the target of the query key's position (zoology puts it one later, then shifts).
    labels = np.full((n, seq_len), IGNORE, dtype=np.int64)
    np.put_along_axis(labels, context_len + 2 * gaps, values, axis=1)

    if random_non_queries:
        noise = rng.randint(0, vocab_size, size=input_ids.shape)
        input_ids = np.where(input_ids == 0, noise, input_ids)
    return {"input_ids": input_ids.astype(np.int32), "labels": labels.astype(np.int32)}


def set_disjointness(
    num_examples: int,
    *,
    first_len: int = 4,
    second_len: int = 16,
    vocab_size: int = 2048,
    target: str = "token",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Set disjointness, the JRT paper's synthetic (Arora et al., 2024, "Just read twice").

    Layout of one example (length ``first_len + second_len + 3``)::

        input_ids: [PREFIX] a_1 .. a_first [SEP] b_1 .. b_second [ANSWER]
        labels:    -100 everywhere except the [ANSWER] position

    ``target="token"`` (the release): the two sets are drawn from disjoint random halves of the
    non-special vocabulary, then one element of the first set overwrites a random element of the
    second, so they share exactly one token, and the label is that token.
    ``target="binary"`` (our variant, the literal "do they intersect?"): the overlap is planted in half of
    the examples, and the label is ``SD_YES`` or ``SD_NO``; set tokens then avoid ids 4 and 5.
    The order of the sets is the order of the arguments: ``first_len < second_len`` is short-first.

    Returns:
      ``{"input_ids": int32 [num_examples, L], "labels": int32 [num_examples, L]}``, with
      ``L = first_len + second_len + 3``.
    """
    if target not in ("token", "binary"):
        raise ValueError(f"set_disjointness target must be 'token' or 'binary', got {target!r}.")
    if num_examples < 1:
        raise ValueError(f"set_disjointness needs num_examples >= 1, got {num_examples}.")
    if first_len < 1 or second_len < 1:
        raise ValueError(f"set_disjointness needs both set sizes >= 1, got {first_len} and {second_len}.")
    num_special = 4 if target == "token" else 6
    half = vocab_size // 2
    if first_len > half or second_len > vocab_size - num_special - half:
        raise ValueError(
            f"set_disjointness draws the first set from {half} tokens and the second from "
            f"{vocab_size - num_special - half}, got set sizes {first_len} and {second_len}; use a larger "
            f"vocab_size."
        )

    rng = np.random.RandomState(seed)
    seq_len = first_len + second_len + 3
    input_ids = np.zeros((num_examples, seq_len), dtype=np.int64)
    labels = np.full((num_examples, seq_len), IGNORE, dtype=np.int64)
    for i in range(num_examples):
        # Same draws, same order as the release for target="token".
        pool = rng.permutation(np.arange(num_special, vocab_size))
        first = rng.choice(pool[:half], first_len, replace=False)
        second = rng.choice(pool[half:], second_len, replace=False)
        shared = first[rng.randint(first_len)]
        if target == "token":
            second[rng.randint(second_len)] = shared
            answer = shared
        else:
            intersect = rng.rand() < 0.5
            if intersect:
                second[rng.randint(second_len)] = shared
            answer = SD_YES if intersect else SD_NO
        input_ids[i] = np.concatenate([[SD_PREFIX], first, [SD_SEP_SETS], second, [SD_SEP_ANSWER]])
        labels[i, -1] = answer
    return {"input_ids": input_ids.astype(np.int32), "labels": labels.astype(np.int32)}


def repeat_context(batch: dict, context_len: int, times: int = 2) -> dict[str, np.ndarray]:
    """JRT-Prompt: write the first ``context_len`` tokens ``times`` times, then the rest of the sequence.

    Only the last copy keeps its labels (the earlier copies are followed by the context again, not by
    what the labels predicted), so the scored positions, targets and their count are unchanged.

    Args:
      batch: ``{"input_ids": [N, L], "labels": [N, L]}`` (other keys are dropped).
      context_len: C, the length of the context (see the module docstring), 1 <= C <= L.
      times: how many times the context is read; 2 is the paper's "read twice".

    Returns:
      ``{"input_ids": [N, L + (times - 1) C], "labels": [N, L + (times - 1) C]}``.
    """
    input_ids, labels = np.asarray(batch["input_ids"]), np.asarray(batch["labels"])
    if input_ids.ndim != 2 or input_ids.shape != labels.shape:
        raise ValueError(
            f"repeat_context expects input_ids and labels of the same shape [N, L], got "
            f"{input_ids.shape} and {labels.shape}."
        )
    if not 1 <= context_len <= input_ids.shape[1]:
        raise ValueError(
            f"repeat_context needs 1 <= context_len <= L = {input_ids.shape[1]}, got {context_len}."
        )
    if times < 1:
        raise ValueError(f"repeat_context needs times >= 1, got {times}.")
    context = input_ids[:, :context_len]
    ignored = np.full((labels.shape[0], (times - 1) * context_len), IGNORE, dtype=labels.dtype)
    return {
        "input_ids": np.concatenate([context] * (times - 1) + [input_ids], axis=1),
        "labels": np.concatenate([ignored, labels], axis=1),
    }


def recall_accuracy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Zoology's recall accuracy: per example the fraction of scored positions predicted right (argmax),
    then the mean over examples that have at least one scored position. Jittable.

    Args:
      logits: [B, L, V].
      labels: [B, L] int, ``-100`` where not scored.

    Returns:
      A float32 scalar.
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"recall_accuracy expects logits [B, L, V] and labels [B, L], got {logits.shape} and "
            f"{labels.shape}."
        )
    scored = labels != IGNORE  # [B, L]
    hit = (jnp.argmax(logits, axis=-1) == labels) & scored
    per_example = hit.sum(axis=1) / jnp.maximum(scored.sum(axis=1), 1)  # [B]
    has_any = scored.any(axis=1)
    return (jnp.where(has_any, per_example, 0.0).sum() / jnp.maximum(has_any.sum(), 1)).astype(jnp.float32)


def batch_iterator(data: dict, batch_size: int, *, seed: int = 0):
    """A ``batch_fn(step) -> batch`` over ``data`` (numpy arrays with a shared first axis).

    Each epoch is a fresh permutation drawn from ``(seed, epoch)``, so the batch of a step is a pure
    function of the step (resuming from a checkpoint gives the same batches). The last partial batch of
    an epoch is dropped.
    """
    sizes = {k: np.shape(v)[0] for k, v in data.items()}
    n = next(iter(sizes.values()))
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch_iterator needs arrays with the same first dimension, got {sizes}.")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_iterator needs 1 <= batch_size <= {n} examples, got {batch_size}.")
    per_epoch = n // batch_size

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        epoch, index = divmod(int(step), per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        rows = order[index * batch_size : (index + 1) * batch_size]
        return {k: np.asarray(v)[rows] for k, v in data.items()}

    return batch_fn
