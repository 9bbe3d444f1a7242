"""Cost accounting: analytic training FLOPs per example of the ColBERT encoder (issue 14)."""

from __future__ import annotations

__all__ = ["flops_per_example", "encoder_forward_flops"]


def encoder_forward_flops(bert, length: int, dim: int | None = None) -> float:
    """Forward matmul FLOPs of one sequence of `length` tokens through the backbone (and the head to `dim`).

    Per layer and token: the Q, K, V and output projections (4 E^2 multiply-adds), the attention scores
    and the weighted sum over all `length` keys (2 L E; ModernBERT's sliding-window layers are computed
    densely with a mask, so they count the same), and the MLP (2 E F, or 3 E F for ModernBERT's GeGLU,
    whose input projection has 2F outputs). A multiply-add is 2 FLOPs; embeddings (gathers), norms,
    activations and softmax are not counted.
    """
    from colbert.bert import BertConfig

    e, f, n = bert.hidden_size, bert.intermediate_size, bert.num_layers
    mlp = 2 * e * f if isinstance(bert, BertConfig) else 3 * e * f  # GeGLU: E -> 2F, then F -> E
    per_token = n * (4 * e * e + 2 * length * e + mlp) + (e * dim if dim else 0)
    return 2.0 * length * per_token


def flops_per_example(
    config,
    *,
    nway: int = 2,
    query_len: int | None = None,
    doc_len: int | None = None,
    dim: int | None = None,
    batch_size: int = 1,
    use_ib_negatives: bool = False,
) -> float:
    """Training FLOPs of one example (a query and its `nway` documents) of `colbert.train`: 3 x the forward
    matmul FLOPs (backward = 2 x forward), a multiply-add counted as 2.

    Counted: the encoder on the query (query_len tokens, all positions, as ColBERT's query augmentation)
    and on nway documents (doc_len tokens each: `make_batch` pads to doc_maxlen), see
    `encoder_forward_flops`, plus the MaxSim similarities (Lq x Ld x dim multiply-adds per query-document
    pair: nway per query, plus all batch_size * nway documents of the batch with in-batch negatives). Not counted:
    embeddings, norms, activations, softmax, the loss and the optimizer update.

    config: a `ColBERTConfig` or `RunConfig` (lengths and dim from it), or a bare backbone config
    (`BertConfig`/`ModernBertConfig`; then query_len, doc_len and dim are required).
    """
    from colbert.bert import BertConfig, ColBERTConfig
    from colbert.train import RunConfig

    if isinstance(config, RunConfig):
        nway, use_ib_negatives = config.nway, config.use_ib_negatives
        batch_size, config = config.batch_size, config.model
    if isinstance(config, ColBERTConfig):
        bert = config.bert
        query_len = config.query_maxlen if query_len is None else query_len
        doc_len = config.doc_maxlen if doc_len is None else doc_len
        dim = config.dim if dim is None else dim
    elif isinstance(config, BertConfig) or type(config).__name__ == "ModernBertConfig":
        bert = config
        if None in (query_len, doc_len, dim):
            raise ValueError(
                "flops_per_example with a bare backbone config needs query_len, doc_len and dim; got "
                f"query_len={query_len}, doc_len={doc_len}, dim={dim}."
            )
    else:
        raise ValueError(
            "flops_per_example expects a ColBERTConfig, a RunConfig or a backbone config (BertConfig, "
            f"ModernBertConfig); got {type(config).__name__}."
        )
    if nway < 1 or batch_size < 1 or query_len < 1 or doc_len < 1:
        raise ValueError(
            f"nway, batch_size, query_len and doc_len must be >= 1; got {nway}, {batch_size}, {query_len}, "
            f"{doc_len}."
        )
    forward = encoder_forward_flops(bert, query_len, dim) + nway * encoder_forward_flops(bert, doc_len, dim)
    docs_met = nway + (batch_size * nway if use_ib_negatives else 0)
    forward += 2.0 * docs_met * query_len * doc_len * dim
    return 3.0 * forward
