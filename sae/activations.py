"""Activations from Flax models: read one (ActivationStore), replace it (splice), or push it (steer).

A ``hook`` names an activation by its '/'-separated path in the Linen module tree:
  - ``"layer_2"``: the output of the submodule at that path (its ``__call__`` return value);
  - ``"layer_2/resid_post"``: a value that module sows into "intermediates" (reading only). For
    ``splice``/``steer`` a trailing sown name is taken to stand for the module's output, which is what
    colbert's BERT sows (``resid_post`` == the layer output).
Reading uses ``capture_intermediates`` filtered to that one module plus the sown collection; writing uses
``nn.intercept_methods`` on that module's ``__call__``, so any ``apply_fn`` that calls Linen modules works.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sae.config import SAEConfig
from sae.model import SAE, check_input, decoder_directions
from sae.model import apply as sae_apply


def _hook_path(hook: str) -> tuple[str, ...]:
    if not isinstance(hook, str) or not hook.strip("/"):
        raise ValueError(
            f"hook must be a '/'-separated module path such as 'layer_2/resid_post'; got {hook!r}."
        )
    return tuple(p for p in hook.split("/") if p)


def _targets(path: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Module paths a hook may name: the path itself, or its parent when the last part is a sown name."""
    return (path, path[:-1]) if len(path) > 1 else (path,)


def read_intermediate(state: Mapping, hook: str):
    """The activation named ``hook`` in the mutable state returned by ``apply(..., mutable=["intermediates"])``."""
    node: Any = state.get("intermediates", state)
    path = _hook_path(hook)
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            have = list(node) if isinstance(node, Mapping) else type(node).__name__
            raise ValueError(
                f"no intermediate {hook!r}: {'/'.join(path[: i + 1])!r} not found (have {have})."
            )
        node = node[key]
    if isinstance(node, Mapping):
        if "__call__" not in node:
            raise ValueError(
                f"{hook!r} is a module without a captured output; name a sown value, e.g. {list(node)}."
            )
        node = node["__call__"]
    return node[0] if isinstance(node, tuple) else node


def capture(apply_fn: Callable, variables, hook: str, *args, **kwargs):
    """Run ``apply_fn(variables, *args, **kwargs)`` and return (outputs, the activation at ``hook``)."""
    path = _hook_path(hook)
    outputs, state = apply_fn(
        variables,
        *args,
        capture_intermediates=lambda mdl, method: mdl.path in _targets(path) and method == "__call__",
        mutable=["intermediates"],
        **kwargs,
    )
    return outputs, read_intermediate(state, hook)


def _check_not_jitted(apply_fn: Callable) -> None:
    """A ``jax.jit``-compiled apply function would be traced once with the interceptor inside and cached, so a
    later plain call would silently return the patched output: refuse it."""
    if hasattr(apply_fn, "lower") and hasattr(apply_fn, "trace"):
        raise ValueError(
            "apply_fn is already jax.jit-compiled; pass the plain function (e.g. model.apply) and jit the "
            "patched function instead: jax.jit(sae.splice(model.apply, ...))."
        )


def patched(apply_fn: Callable, variables, hook: str, patch: Callable[[jax.Array], jax.Array]) -> Callable:
    """``fn(*args, **kwargs)`` = ``apply_fn(variables, *args, **kwargs)`` with the activation at ``hook``
    replaced by ``patch(activation)`` (the rest of the model sees the patched value). ``apply_fn`` must not
    be ``jax.jit``-compiled (ValueError); jit the returned ``fn`` instead."""
    path = _hook_path(hook)
    _check_not_jitted(apply_fn)
    hit = {"count": 0}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if (
            context.method_name == "__call__"
            and not isinstance(module, SAE)
            and module.path in _targets(path)
        ):
            hit["count"] += 1
            return patch(out)
        return out

    def fn(*args, **kwargs):
        hit["count"] = 0
        with nn.intercept_methods(interceptor):
            out = apply_fn(variables, *args, **kwargs)
        if hit["count"] == 0:
            raise ValueError(f"hook {hook!r} matched no module call; check the module path.")
        return out

    return fn


def reconstruct(cfg: SAEConfig, sae_params, x, use_error_term: bool = False):
    """SAE reconstruction of x [..., d_in] (plus the error x - x_hat, i.e. x itself numerically but with the
    SAE in the graph, when ``use_error_term``)."""
    x_hat, _ = sae_apply(cfg, sae_params, x)
    if use_error_term:
        return x_hat + jax.lax.stop_gradient(x - x_hat)
    return x_hat


def splice(
    apply_fn: Callable,
    params,
    sae_params,
    hook: str,
    *,
    cfg: SAEConfig,
    use_error_term: bool = False,
) -> Callable:
    """``fn(*args, **kwargs)``: the model with its activation at ``hook`` replaced by the SAE reconstruction
    (plus the error term when ``use_error_term``, as SAELens' ``use_error_term``). ``params`` are the model's
    variables as ``apply_fn`` takes them."""
    _hook_path(hook)
    return patched(apply_fn, params, hook, lambda a: reconstruct(cfg, sae_params, a, use_error_term))


def ablate(apply_fn: Callable, params, hook: str) -> Callable:
    """The model with the activation at ``hook`` set to zero (the zero-ablation baseline)."""
    return patched(apply_fn, params, hook, jnp.zeros_like)


def steer(apply_fn: Callable, params, sae_params, hook: str, feature: int, scale: float) -> Callable:
    """The model with ``scale`` times the unit decoder direction of ``feature`` added to the activation at
    ``hook`` at every position."""
    directions = decoder_directions(sae_params)
    if not 0 <= int(feature) < directions.shape[0]:
        raise ValueError(f"feature must be in [0, d_sae={directions.shape[0]}); got {feature}.")
    vec = scale * directions[int(feature)]

    def add(a):
        if a.shape[-1] != vec.shape[-1]:
            raise ValueError(
                f"activation at {hook!r} has width {a.shape[-1]}; the SAE expects {vec.shape[-1]}."
            )
        return a + vec.astype(a.dtype)

    return patched(apply_fn, params, hook, add)


class ActivationStore:
    """Serves shuffled [batch_size, d] training batches of the activation at ``hook``.

    ``inputs`` is an iterable of model-input batches: dicts of keyword arguments for ``apply_fn`` (e.g.
    ``{"input_ids": ..., "attention_mask": ...}``) or tuples of positional ones. Positions where
    ``inputs[mask_key] == 0`` (padding) are dropped, or where ``token_mask(inputs)`` is False when given (e.g.
    to drop special tokens too). Activations go through a mixing buffer (as SAELens):
    once it holds ``buffer_size`` rows it is shuffled, half is served, half is kept to mix with new ones.
    Iterating ends when ``inputs`` ends (wrap it in ``itertools.cycle`` for more epochs).
    """

    def __init__(
        self,
        apply_fn: Callable,
        variables,
        inputs: Iterable,
        hook: str,
        *,
        batch_size: int = 4096,
        buffer_size: int = 65536,
        mask_key: str | None = "attention_mask",
        seed: int = 0,
        jit: bool = True,
        token_mask: Callable[[Any], Any] | None = None,
        drop_remainder: bool = True,
    ):
        _hook_path(hook)
        if batch_size < 1 or buffer_size < 2 * batch_size:
            raise ValueError(
                f"need batch_size >= 1 and buffer_size >= 2 * batch_size; got {batch_size} and {buffer_size}."
            )
        self.apply_fn, self.variables, self.inputs, self.hook = apply_fn, variables, inputs, hook
        self.batch_size, self.buffer_size, self.mask_key = batch_size, buffer_size, mask_key
        self.token_mask, self.drop_remainder = token_mask, drop_remainder
        self.rng = np.random.default_rng(seed)
        run = lambda variables, args, kwargs: capture(apply_fn, variables, hook, *args, **kwargs)[1]
        self._run = jax.jit(run) if jit else run

    def activations(self, model_inputs) -> np.ndarray:
        """The hook's activations for one input batch, padding dropped: [n_tokens, d]."""
        args, kwargs = (), {}
        if isinstance(model_inputs, Mapping):
            kwargs = dict(model_inputs)
        else:
            args = tuple(model_inputs)
        acts = np.asarray(self._run(self.variables, args, kwargs), np.float32)
        mask = None
        if self.token_mask is not None:
            mask = np.asarray(self.token_mask(model_inputs)).astype(bool)
        elif self.mask_key is not None and self.mask_key in kwargs:
            mask = np.asarray(kwargs[self.mask_key]).astype(bool)
        if mask is not None:
            if mask.shape != acts.shape[:-1]:
                raise ValueError(
                    f"{self.mask_key} has shape {mask.shape}; activations have {acts.shape[:-1]}."
                )
            return acts[mask]
        return acts.reshape(-1, acts.shape[-1])

    def collect(self, n_tokens: int | None = None) -> np.ndarray:
        """All (or the first ``n_tokens``) activations in input order, [N, d], without shuffling."""
        out, total = [], 0
        for batch in self.inputs:
            acts = self.activations(batch)
            out.append(acts)
            total += len(acts)
            if n_tokens is not None and total >= n_tokens:
                break
        if not out:
            raise ValueError("the inputs iterable yielded no batches.")
        acts = np.concatenate(out)
        return acts if n_tokens is None else acts[:n_tokens]

    def __iter__(self) -> Iterator[np.ndarray]:
        buffer = np.zeros((0, 0), np.float32)
        source = iter(self.inputs)
        exhausted = False
        while True:
            while not exhausted and len(buffer) < self.buffer_size:
                chunk = next(source, None)
                if chunk is None:
                    exhausted = True
                    break
                acts = self.activations(chunk)
                buffer = acts if buffer.size == 0 else np.concatenate([buffer, acts])
            if len(buffer) < self.batch_size and exhausted:
                yield from self._remainder(buffer)
                return
            buffer = buffer[self.rng.permutation(len(buffer))]
            serve = len(buffer) if exhausted else len(buffer) // 2
            n = serve // self.batch_size * self.batch_size
            for i in range(0, n, self.batch_size):
                yield buffer[i : i + self.batch_size]
            buffer = buffer[n:]
            if exhausted and len(buffer) < self.batch_size:
                yield from self._remainder(buffer)
                return

    def _remainder(self, rows: np.ndarray):
        if len(rows) == 0:
            return
        if not self.drop_remainder:
            yield rows
            return
        warnings.warn(
            f"ActivationStore dropped the last {len(rows)} activations (fewer than batch_size="
            f"{self.batch_size}); pass drop_remainder=False to get them as a smaller batch, or use collect().",
            RuntimeWarning,
            stacklevel=3,
        )

    def write_shards(self, directory, *, n_tokens: int | None = None, rows_per_shard: int = 65536):
        """Write the activations of ``inputs`` (in input order, all or the first ``n_tokens``) to ``directory``
        as ``jaxzoo.data`` shards, one input batch in memory at a time; ``sae.train(cfg, directory, ...)``
        then streams them, so a corpus larger than memory trains. Returns the ``jaxzoo.data.ShardedArrays``."""
        from jaxzoo import data

        def chunks():
            total = 0
            for batch in self.inputs:
                acts = self.activations(batch)
                if n_tokens is not None:
                    acts = acts[: n_tokens - total]
                total += len(acts)
                yield acts
                if n_tokens is not None and total >= n_tokens:
                    return

        return data.write_array_shards(directory, chunks(), rows_per_shard=rows_per_shard)

    def batches(self, n: int) -> list[np.ndarray]:
        """The first n training batches."""
        return list(itertools.islice(iter(self), n))


__all__ = ["ActivationStore", "ablate", "capture", "check_input", "patched", "reconstruct", "splice", "steer"]
