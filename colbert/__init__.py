"""colbert: late interaction (ColBERTv2 / PLAID) in JAX: MaxSim scoring, binary and residual compression,
a PLAID-style index, reranking, rank fusion and retrieval metrics; plus (part 2) the BERT encoder."""

# Part 1: scoring and retrieval.
from colbert.codec import ResidualCodec
from colbert.index import Index, exhaustive_search, plaid_defaults
from colbert.maxsim import maxsim, maxsim_passages, pad_documents, split_passages
from colbert.metrics import evaluate, mrr_at_k, ndcg_at_k, recall_at_k, success_at_k
from colbert.quant import binarize, maxsim_binary, maxsim_hamming, unpack_bits
from colbert.rerank import reciprocal_rank_fusion, rerank

__all__ = [
    "maxsim",
    "maxsim_passages",
    "pad_documents",
    "split_passages",
    "binarize",
    "unpack_bits",
    "maxsim_binary",
    "maxsim_hamming",
    "ResidualCodec",
    "Index",
    "plaid_defaults",
    "exhaustive_search",
    "rerank",
    "reciprocal_rank_fusion",
    "ndcg_at_k",
    "mrr_at_k",
    "recall_at_k",
    "success_at_k",
    "evaluate",
]
