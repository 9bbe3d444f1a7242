"""ColBERT tokenisation with the `tokenizers` library, from a local tokenizer.json or vocab.txt.

Rules (stanford-futuredata/ColBERT `query_tokenization.py` / `doc_tokenization.py`):

- query: ``[CLS] [Q] q_1 ... q_n [SEP] [MASK] ... [MASK]``, exactly `query_maxlen` tokens (the text is cut
  at `query_maxlen - 3` word pieces). The attention mask is 0 on the [MASK] padding (unless
  `attend_to_mask_tokens`), but every position is scored in MaxSim ("query augmentation").
- document: ``[CLS] [D] d_1 ... d_n [SEP]`` (text cut at `doc_maxlen - 3` word pieces), padded with [PAD] to
  the longest in the batch. The MaxSim mask drops padding and, with `mask_punctuation`, every token whose
  id is that of a `string.punctuation` symbol.

[Q] and [D] are `[unused0]` / `[unused1]` of the BERT vocabulary (`ColBERTConfig.query_token`/`doc_token`;
PyLate folders use the added tokens "[Q] " / "[D] "; an empty marker inserts nothing, as PyLate's prefix "").
Special tokens are BERT's ([CLS] [SEP] [MASK] [PAD]) or, for RoBERTa / XLM-RoBERTa vocabularies, <s> </s>
<mask> <pad>.
"""

from __future__ import annotations

import json
import shutil
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from colbert.bert import ColBERTConfig

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
# BERT's special tokens, then RoBERTa's: the first one the vocabulary holds is used.
SPECIALS = {
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "mask": ("[MASK]", "<mask>"),
    "pad": ("[PAD]", "<pad>"),
}


class ColBERTTokenizer:
    """Wraps a `tokenizers.Tokenizer` (BERT word pieces) with the ColBERT query/document rules."""

    def __init__(self, tokenizer: Tokenizer, config: ColBERTConfig, source: Path | None = None):
        self.config = config
        self.source = source  # folder the tokenizer files came from (copied by `save`)
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.no_truncation()
        self.cls_id, self.sep_id, self.mask_id, self.pad_id = (self._special(k) for k in SPECIALS)
        # None: no marker (an empty `query_token` / `doc_token`).
        self.query_token_id = self._id(config.query_token) if config.query_token else None
        self.doc_token_id = self._id(config.doc_token) if config.doc_token else None
        # ColBERT's skiplist: the first word piece of every punctuation symbol.
        skip = set()
        for symbol in string.punctuation:
            pieces = self._tok.encode(symbol, add_special_tokens=False).ids
            if pieces:
                skip.add(pieces[0])
        self.skiplist = np.array(sorted(skip), dtype=np.int32)

    def _id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"The tokenizer's vocabulary has no token {token!r}.")
        return i

    def _special(self, kind: str) -> int:
        for token in SPECIALS[kind]:
            i = self._tok.token_to_id(token)
            if i is not None:
                return i
        raise ValueError(f"The tokenizer's vocabulary has none of the {kind} tokens {SPECIALS[kind]}.")

    @classmethod
    def from_pretrained(cls, path, config: ColBERTConfig | None = None) -> ColBERTTokenizer:
        """Load from a folder holding tokenizer.json, or else vocab.txt (+ tokenizer_config.json)."""
        path = Path(path)
        config = ColBERTConfig() if config is None else config
        return cls(load_tokenizer(path), config, source=path)

    def token_for_id(self, i: int) -> str:
        """The vocabulary token of id i (ValueError if there is none)."""
        token = self._tok.id_to_token(int(i))
        if token is None:
            raise ValueError(f"The tokenizer's vocabulary has no id {i}.")
        return token

    def save(self, path) -> None:
        """Write tokenizer.json (and copy vocab.txt / tokenizer_config.json / special tokens if known)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.source is not None and self.source.resolve() != path.resolve():
            for name in TOKENIZER_FILES[1:]:
                if (self.source / name).exists():
                    shutil.copy(self.source / name, path / name)
        self._tok.save(str(path / "tokenizer.json"))
        if not (path / "tokenizer_config.json").exists():
            # transformers' AutoTokenizer (PyLate, ColBERT) needs the special tokens named.
            bert = self._tok.id_to_token(self.cls_id) == "[CLS]"
            names = {k: self._tok.id_to_token(getattr(self, f"{k}_id")) for k in SPECIALS}
            unk = "[UNK]" if bert else "<unk>"
            config = {
                "tokenizer_class": "BertTokenizerFast" if bert else "XLMRobertaTokenizerFast",
                **{f"{k}_token": v for k, v in names.items()},
                **({"unk_token": unk} if self._tok.token_to_id(unk) is not None else {}),
            }
            (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))

    def _pieces(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        if isinstance(texts, str):
            raise ValueError("Expected a list of strings, got a single string; wrap it in a list.")
        return [e.ids[:limit] for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def queries(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention_mask), int32 [N, query_maxlen]. All positions are scored in MaxSim."""
        lq = self.config.query_maxlen
        ids = np.full((len(texts), lq), self.mask_id, np.int32)
        attn = np.full((len(texts), lq), int(self.config.attend_to_mask_tokens), np.int32)
        marker = [] if self.query_token_id is None else [self.query_token_id]
        for i, pieces in enumerate(self._pieces(texts, lq - 2 - len(marker))):
            row = [self.cls_id, *marker, *pieces, self.sep_id]
            ids[i, : len(row)] = row
            attn[i, : len(row)] = 1
        return ids, attn

    def documents(
        self, texts: Sequence[str], pad_to: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, attention_mask, maxsim_mask), int32 [N, L], L = the longest row or `pad_to`."""
        marker = [] if self.doc_token_id is None else [self.doc_token_id]
        rows = [
            [self.cls_id, *marker, *p, self.sep_id]
            for p in self._pieces(texts, self.config.doc_maxlen - 2 - len(marker))
        ]
        longest = max((len(r) for r in rows), default=0)
        width = longest if pad_to is None else pad_to
        if width < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest tokenised document ({longest}).")
        ids = np.full((len(rows), width), self.pad_id, np.int32)
        attn = np.zeros((len(rows), width), np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            attn[i, : len(row)] = 1
        keep = attn.copy()
        if self.config.mask_punctuation:
            keep = keep * ~np.isin(ids, self.skiplist)
        return ids, attn, keep

    def plain(self, texts: Sequence[str], maxlen: int) -> tuple[np.ndarray, np.ndarray]:
        """Plain BERT input ``[CLS] ... [SEP]`` padded with [PAD]: (ids, attention_mask) int32 [N, L]."""
        rows = [[self.cls_id, *p, self.sep_id] for p in self._pieces(texts, maxlen - 2)]
        width = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), self.pad_id, np.int32)
        attn = np.zeros((len(rows), width), np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            attn[i, : len(row)] = 1
        return ids, attn


def load_tokenizer(path) -> Tokenizer:
    """The raw `tokenizers.Tokenizer` of a folder: tokenizer.json, or else vocab.txt (+ tokenizer_config.json)."""
    path = Path(path)
    if (path / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    elif (path / "vocab.txt").exists():
        from tokenizers.implementations import BertWordPieceTokenizer

        lower = True
        if (path / "tokenizer_config.json").exists():
            lower = json.loads((path / "tokenizer_config.json").read_text()).get("do_lower_case", True)
        tok = BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=lower)._tokenizer
    else:
        raise ValueError(f"{path} holds neither tokenizer.json nor vocab.txt.")
    return tok
