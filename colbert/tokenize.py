"""ColBERT tokenisation with the `tokenizers` library, from a local tokenizer.json or vocab.txt.

Rules (stanford-futuredata/ColBERT `query_tokenization.py` / `doc_tokenization.py`):

- query: ``[CLS] [Q] q_1 ... q_n [SEP] [MASK] ... [MASK]``, exactly `query_maxlen` tokens (the text is cut
  at `query_maxlen - 3` word pieces). The attention mask is 0 on the [MASK] padding (unless
  `attend_to_mask_tokens`), but every position is scored in MaxSim ("query augmentation").
- document: ``[CLS] [D] d_1 ... d_n [SEP]`` (text cut at `doc_maxlen - 3` word pieces), padded with [PAD] to
  the longest in the batch. The MaxSim mask drops padding and, with `mask_punctuation`, every token whose
  id is that of a `string.punctuation` symbol.

[Q] and [D] are `[unused0]` / `[unused1]` of the BERT vocabulary (`ColBERTConfig.query_token`/`doc_token`).
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


class ColBERTTokenizer:
    """Wraps a `tokenizers.Tokenizer` (BERT word pieces) with the ColBERT query/document rules."""

    def __init__(self, tokenizer: Tokenizer, config: ColBERTConfig, source: Path | None = None):
        self.config = config
        self.source = source  # folder the tokenizer files came from (copied by `save`)
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.no_truncation()
        self.cls_id = self._id("[CLS]")
        self.sep_id = self._id("[SEP]")
        self.mask_id = self._id("[MASK]")
        self.pad_id = self._id("[PAD]")
        self.query_token_id = self._id(config.query_token)
        self.doc_token_id = self._id(config.doc_token)
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

    @classmethod
    def from_pretrained(cls, path, config: ColBERTConfig | None = None) -> ColBERTTokenizer:
        """Load from a folder holding tokenizer.json, or else vocab.txt (+ tokenizer_config.json)."""
        path = Path(path)
        config = ColBERTConfig() if config is None else config
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
        return cls(tok, config, source=path)

    def save(self, path) -> None:
        """Write tokenizer.json (and copy vocab.txt / tokenizer_config.json / special tokens if known)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.source is not None and self.source.resolve() != path.resolve():
            for name in TOKENIZER_FILES[1:]:
                if (self.source / name).exists():
                    shutil.copy(self.source / name, path / name)
        self._tok.save(str(path / "tokenizer.json"))

    def _pieces(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        if isinstance(texts, str):
            raise ValueError("Expected a list of strings, got a single string; wrap it in a list.")
        return [e.ids[:limit] for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def queries(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention_mask), int32 [N, query_maxlen]. All positions are scored in MaxSim."""
        lq = self.config.query_maxlen
        ids = np.full((len(texts), lq), self.mask_id, np.int32)
        attn = np.full((len(texts), lq), int(self.config.attend_to_mask_tokens), np.int32)
        for i, pieces in enumerate(self._pieces(texts, lq - 3)):
            row = [self.cls_id, self.query_token_id, *pieces, self.sep_id]
            ids[i, : len(row)] = row
            attn[i, : len(row)] = 1
        return ids, attn

    def documents(
        self, texts: Sequence[str], pad_to: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, attention_mask, maxsim_mask), int32 [N, L], L = the longest row or `pad_to`."""
        rows = [
            [self.cls_id, self.doc_token_id, *p, self.sep_id]
            for p in self._pieces(texts, self.config.doc_maxlen - 3)
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
