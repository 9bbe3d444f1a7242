"""JRT-Prompt: show a recurrent LM the context twice before the question.

Token form: `jrt_prompt(context, question)` = prefix + context + separator + context + question (the
context `repeats` times, separator between copies). Text form: `jrt_prompt_text` with the reference's
lm-eval-harness templates (`*Twice.doc_to_text`):

  "swde" / "fda":              "Information about {key}. " + ctx + "\\n" + ctx + " {key}:"
  "nq" / "drop" / "triviaqa":  orig_question + " " + ctx + "\\n" + ctx + " " + question
  "squad":                     question + " " + ctx + "\\n" + standard_prompt   (context once: the
                               question-first read is the first pass, as in the reference)

Before the prompt is built, the reference cuts each document to (context_length - 50) tokens around
the answer (`truncate_context`); `truncate_context` here keeps a window of that size containing the
answer span, centred on it where possible (our reading of "around the answer": the exact centring is
a decision, not taken from the source).
"""

from __future__ import annotations

import numpy as np

TEMPLATES = ("swde", "fda", "nq", "drop", "triviaqa", "squad")


def _tokens(name: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of token ids, but got shape {x.shape}.")
    if x.size and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids, but got dtype {x.dtype}.")
    return x.astype(np.int64)


def jrt_prompt(
    context_tokens,
    question_tokens,
    *,
    repeats: int = 2,
    separator_tokens=(),
    prefix_tokens=(),
    max_len: int | None = None,
    vocab_size: int | None = None,
) -> np.ndarray:
    """prefix + (context + separator) * (repeats - 1) + context + question, as 1-D int32 token ids.

    Raises ValueError when the prompt is longer than `max_len` (the model's context) or holds ids
    outside [0, vocab_size).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, but got {repeats}.")
    ctx = _tokens("context_tokens", context_tokens)
    parts = [_tokens("prefix_tokens", prefix_tokens)]
    sep = _tokens("separator_tokens", separator_tokens)
    for _ in range(repeats - 1):
        parts += [ctx, sep]
    parts += [ctx, _tokens("question_tokens", question_tokens)]
    out = np.concatenate(parts)
    if max_len is not None and out.size > max_len:
        raise ValueError(
            f"The JRT prompt has {out.size} tokens ({repeats} copies of a {ctx.size}-token context), longer "
            f"than the configured context max_len={max_len}; truncate the context first."
        )
    if vocab_size is not None and out.size and (out.min() < 0 or out.max() >= vocab_size):
        raise ValueError(
            f"Prompt token ids must be in [0, {vocab_size}), but got [{out.min()}, {out.max()}]."
        )
    return out.astype(np.int32)


def truncate_context(tokens, max_tokens: int, answer_span: tuple[int, int] | None = None) -> np.ndarray:
    """Keep at most `max_tokens` tokens: a window around `answer_span` (start, end) or else the head."""
    tokens = _tokens("tokens", tokens)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, but got {max_tokens}.")
    n = tokens.size
    if n <= max_tokens:
        return tokens
    if answer_span is None:
        return tokens[:max_tokens]
    start, end = answer_span
    if not 0 <= start <= end <= n:
        raise ValueError(f"answer_span must satisfy 0 <= start <= end <= {n}, but got {answer_span}.")
    if end - start > max_tokens:  # the answer alone does not fit: keep its beginning
        return tokens[start : start + max_tokens]
    lo = (start + end) // 2 - max_tokens // 2  # centred on the answer, then moved inside [0, n]
    lo = min(max(lo, end - max_tokens, 0), start, n - max_tokens)
    return tokens[lo : lo + max_tokens]


def jrt_prompt_text(
    context: str,
    question: str,
    *,
    template: str = "nq",
    key: str | None = None,
    orig_question: str | None = None,
    standard_prompt: str | None = None,
) -> str:
    """The reference's twice-read prompts (see the module docstring for each template)."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, but got {template!r}.")
    if template in ("swde", "fda"):
        key = question if key is None else key
        return f"Information about {key}. {context}\n{context} {key}:"
    if template == "squad":
        return f"{question} {context}\n{question if standard_prompt is None else standard_prompt}"
    orig = question if orig_question is None else orig_question
    return f"{orig} {context}\n{context} {question}"


def contains_match(prediction: str, answers) -> bool:
    """The reference's `contains` metric: any answer is a case-insensitive substring of the prediction
    (the prediction is cut at the first newline, where the reference stops decoding)."""
    pred = prediction.split("\n")[0].lower()
    answers = [answers] if isinstance(answers, str) else list(answers)
    return any(a.lower() in pred for a in answers)
