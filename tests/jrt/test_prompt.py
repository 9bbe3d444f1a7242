"""JRT-Prompt: context repeated exactly as the reference's lm-eval tasks do."""

import numpy as np
import pytest

import jrt
from jrt.prompt import contains_match, jrt_prompt, jrt_prompt_text, truncate_context, truncate_context_text


def test_token_prompt_repeats_context():
    ctx, q = [5, 6, 7], [9, 10]
    out = jrt_prompt(ctx, q, separator_tokens=[1], prefix_tokens=[2])
    assert out.dtype == np.int32
    assert out.tolist() == [2, 5, 6, 7, 1, 5, 6, 7, 9, 10]
    assert jrt_prompt(ctx, q, repeats=1).tolist() == [5, 6, 7, 9, 10]
    assert jrt_prompt(ctx, q, repeats=3).tolist() == [5, 6, 7] * 3 + [9, 10]
    assert jrt.jrt_prompt is jrt_prompt


def test_text_templates_match_reference():
    ctx = "Alice lives in Paris."
    assert jrt_prompt_text({"text": ctx + " alice:", "key": "alice"}, "swde") == (
        "Information about Alice. Alice lives in Paris.\nAlice lives in Paris. Alice:"
    )
    doc = {
        "context": " Alice lives in Paris.. where does alice live?",
        "question": "where does alice live?",
        "orig_question": "Q: where?:",
    }
    assert jrt_prompt_text(doc, "nq") == (
        "Q: where? Alice lives in Paris.\nAlice lives in Paris. where does alice live?"
    )
    assert jrt_prompt_text({**doc, "context": "[DOC] Alice [PAR]lives."}, "triviaqa") == (
        "Q: where?: Alice lives.\nAlice lives. where does alice live?"
    )
    squad = {"context": "Alice lives in Paris. Question: x", "question": "Where?", "text": " Answer: "}
    assert jrt_prompt_text(squad, "squad") == "Where? Alice lives in Paris. \nAnswer:"


# --- A transcription of the reference, for the tests below. ---------------------------------------------
class _CharTokenizer:
    """A stand-in for the HF tokenizer the reference calls: one id per character."""

    def batch_encode_plus(self, texts, **_):
        import torch

        return {"input_ids": [torch.tensor([ord(c) for c in texts[0]], dtype=torch.long)]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(int(i)) for i in ids)


def _reference_truncate(doc, tokenizer, context_length=1000, answer_length=50, answer_key=("value",)):
    """`Task.truncate_context` of HazyResearch/prefix-linear-attention, lm-eval-harness/lm_eval/api/task.py
    (commit 7490f22), the lines that compute the short context, transcribed (request building dropped)."""
    import re

    desired_length = context_length - answer_length
    context = doc["context"]
    context = context.strip()
    doc_tokens = tokenizer.batch_encode_plus([context], return_tensors="pt", padding=True, truncation=False)[
        "input_ids"
    ][0]
    answer_pos = -1
    for key in answer_key:
        answer = doc[key]
        if type(answer) == list:  # noqa: E721 (as written)
            answer = answer[0]
        if answer == "" or len(answer) <= 1:
            return None
        answer_pattern = re.compile(re.escape(answer), re.IGNORECASE)
        if answer_match := answer_pattern.search(context):
            if answer_pos == -1 or answer_pos > answer_match.start():
                answer_pos = answer_match.start()
    if answer_pos < 0 and "alt_answers" in doc:
        for answer in doc["alt_answers"]:
            answer_pattern = re.compile(re.escape(answer), re.IGNORECASE)
            if answer_match := answer_pattern.search(context):
                if answer_pos == -1 or answer_pos > answer_match.start():
                    answer_pos = answer_match.start()
            if answer_pos >= 0:
                break
    if len(answer_key) == 0:
        answer_pos = 0
    context_short = context[:answer_pos]
    context_short_tokens = tokenizer.batch_encode_plus([context_short], return_tensors="pt")["input_ids"][0]
    answer_tok_pos = len(context_short_tokens)
    if answer_pos == -1 and "tok_pos" in doc and len(context_short_tokens) > desired_length:
        answer_tok_pos = doc["tok_pos"]
    half_length = desired_length // 2
    start = max(0, answer_tok_pos - half_length)
    completed_length = answer_tok_pos - start
    remaining_length = desired_length - completed_length
    end = min(len(doc_tokens), answer_tok_pos + remaining_length)
    subset_tokens = doc_tokens[start:end]
    return tokenizer.decode(subset_tokens, skip_special_tokens=True)


def test_truncate_context_is_the_references_rule():
    pytest.importorskip("torch")
    tok = _CharTokenizer()
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "Gamma", "delta", "eps", "zeta", "eta", "theta"]
    for trial in range(60):
        n = int(rng.integers(5, 400))
        context = " " + " ".join(rng.choice(words, n)) + " "
        answer = str(rng.choice(words + ["absent", "x", ""]))
        doc = {"context": context, "value": answer}
        if trial % 3 == 0:
            doc["alt_answers"] = ["nothere", str(rng.choice(words))]
        if trial % 5 == 0:
            doc["tok_pos"] = int(rng.integers(0, 50))
        for length in (60, 200, 1000):
            want = _reference_truncate(doc, tok, context_length=length)
            got = truncate_context_text(
                context,
                [answer],
                lambda t: [ord(c) for c in t],
                tok.decode,
                alt_answers=doc.get("alt_answers", ()),
                tok_pos=doc.get("tok_pos"),
                context_length=length,
            )
            assert got == want, (trial, length)
    # On token ids: the window [max(0, a - d // 2), ...) of d = 1000 - 50 tokens.
    toks = np.arange(2000)
    assert truncate_context(toks, 1500).tolist() == list(range(1025, 1975))
    assert truncate_context(toks, 100).tolist() == list(range(0, 950))
    assert truncate_context(toks[:900], 800).tolist() == list(range(325, 900))  # cut although it fits


def test_contains_match():
    assert contains_match("The answer is PARIS\nmore text", ["paris"])
    assert not contains_match("London\nParis", "paris")  # decoding stops at the newline


def test_prompt_errors():
    with pytest.raises(ValueError, match="longer than the configured context"):
        jrt_prompt(np.arange(10), [1], max_len=20)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 8\)"):
        jrt_prompt([1, 2, 9], [1], vocab_size=8)
    with pytest.raises(ValueError, match="1-D sequence of token ids"):
        jrt_prompt(np.zeros((2, 2), int), [1])
    with pytest.raises(ValueError, match="template must be one of"):
        jrt_prompt_text({}, template="bogus")
    with pytest.raises(
        ValueError, match=r"needs the fields \('text', 'key'\), but the document lacks \['key'\]"
    ):
        jrt_prompt_text({"text": "t"}, "swde")
    with pytest.raises(ValueError, match="context_length - answer_length must be positive"):
        truncate_context(np.arange(5), 0, context_length=50)
