"""colbert: late interaction (ColBERTv2 / PLAID) in JAX: MaxSim scoring, binary and residual compression,
a PLAID-style index, reranking, rank fusion and retrieval metrics; plus (part 2) the BERT encoder
and its training on the jaxzoo runtime (`RunConfig`, `init_state`, `make_optimizer`, `make_train_step`,
`train`; `jaxzoo.rebuild(workdir)` brings a run back)."""

# Part 1: scoring and retrieval.
from colbert.codec import ResidualCodec
from colbert.index import Index, exhaustive_search, plaid_defaults
from colbert.maxsim import maxsim, maxsim_passages, pad_documents, split_passages
from colbert.metrics import evaluate, mrr_at_k, ndcg_at_k, recall_at_k, success_at_k
from colbert.quant import binarize, maxsim_binary, maxsim_hamming, ranking_agreement, unpack_bits
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
    "ranking_agreement",
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

# Part 2: the encoder (BERT + ColBERT head), tokenisation, Hugging Face folders, losses and training.
from colbert.bert import (
    BertConfig,
    BertEmbeddings,
    BertLayer,
    BertModel,
    ColBERT,
    ColBERTConfig,
    backbone_from_hf,
    backbone_module,
    colbert_project,
    gelu,
    l2_normalize,
    sharding_examples,
)
from colbert.encoder import Encoder, hf_to_params, params_to_hf
from colbert.losses import (
    colbert_loss,
    group_scores,
    inbatch_negative_cross_entropy,
    kl_distillation,
    nway_cross_entropy,
)
from colbert.modernbert import (
    ModernBertConfig,
    ModernBertEmbeddings,
    ModernBertLayer,
    ModernBertModel,
)
from colbert.tokenize import ColBERTTokenizer
from colbert.train import (
    RunConfig,
    init_state,
    make_batch,
    make_loss_fn,
    make_optimizer,
    make_train_step,
    train,
)

__all__ += [
    "BertConfig",
    "BertEmbeddings",
    "BertLayer",
    "BertModel",
    "ColBERT",
    "ColBERTConfig",
    "colbert_project",
    "l2_normalize",
    "gelu",
    "sharding_examples",
    "Encoder",
    "hf_to_params",
    "params_to_hf",
    "ColBERTTokenizer",
    "colbert_loss",
    "group_scores",
    "nway_cross_entropy",
    "kl_distillation",
    "inbatch_negative_cross_entropy",
    "make_batch",
    "make_loss_fn",
    "make_optimizer",
    "make_train_step",
    "init_state",
    "train",
    "RunConfig",
]

# Streaming indexing (issue 14: passages through the encoder into an Index in bounded memory) and cost
# accounting (training FLOPs per example).
from colbert.flops import flops_per_example  # noqa: E402
from colbert.index import index_num_centroids, search_defaults  # noqa: E402
from colbert.stream import encode_passages, index_passages, pack_words, tokenize_to_shards  # noqa: E402

__all__ += [
    "flops_per_example",
    "encode_passages",
    "index_passages",
    "pack_words",
    "tokenize_to_shards",
    "search_defaults",
    "index_num_centroids",
]

# Backbones beyond BERT (issue 19): ModernBERT (PyLate's GTE-ModernColBERT), chosen by config.json model_type.
__all__ += [
    "backbone_from_hf",
    "backbone_module",
    "ModernBertConfig",
    "ModernBertEmbeddings",
    "ModernBertLayer",
    "ModernBertModel",
]
