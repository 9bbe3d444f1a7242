"""JRT-Prompt: context repeated exactly as the reference's lm-eval tasks do."""

import numpy as np
import pytest

import jrt
from jrt.prompt import contains_match, jrt_prompt, jrt_prompt_text, truncate_context


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
    assert jrt_prompt_text(ctx, "", template="swde", key="Alice") == (
        "Information about Alice. Alice lives in Paris.\nAlice lives in Paris. Alice:"
    )
    assert jrt_prompt_text(ctx, "where does alice live?", template="nq", orig_question="Q: where?") == (
        "Q: where? Alice lives in Paris.\nAlice lives in Paris. where does alice live?"
    )
    assert jrt_prompt_text(ctx, "Where?", template="squad", standard_prompt="Answer:") == (
        "Where? Alice lives in Paris.\nAnswer:"
    )


def test_truncate_context_keeps_the_answer():
    toks = np.arange(100)
    for start, end in [(0, 3), (40, 45), (97, 100), (50, 50)]:
        out = truncate_context(toks, 20, (start, end))
        assert out.size == 20 and out[0] <= start and end <= out[-1] + 1
        assert np.all(np.diff(out) == 1)  # a contiguous window
    assert truncate_context(toks, 20).tolist() == list(range(20))
    assert truncate_context(toks, 200).size == 100


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
        jrt_prompt_text("c", "q", template="bogus")
