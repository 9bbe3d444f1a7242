"""colbert: late interaction (ColBERTv2 / PLAID) in JAX: MaxSim scoring, binary and residual compression,
a PLAID-style index, reranking, rank fusion and retrieval metrics; plus (part 2) the BERT encoder."""

# Part 1: scoring and retrieval.
from colbert.maxsim import maxsim, maxsim_passages, pad_documents, split_passages
from colbert.quant import binarize, maxsim_binary, maxsim_hamming, unpack_bits

__all__ = [
    "maxsim",
    "maxsim_passages",
    "pad_documents",
    "split_passages",
    "binarize",
    "unpack_bits",
    "maxsim_binary",
    "maxsim_hamming",
]
