"""JRT-Prompt: show a recurrent LM the context twice before the question.

Token form: `jrt_prompt(context, question)` = prefix + context + separator + context + question (the
context `repeats` times, separator between copies). Text form: `jrt_prompt_text(doc, template)`, the
reference's lm-eval-harness templates (`*Twice.doc_to_text`) with their text cleaning, character for
character (see its docstring).

Before the prompt is built, the reference cuts each document to (context_length - 50) tokens around the
answer: `truncate_context` (token ids and the answer's token index) and `truncate_context_text` (the
whole rule on text: answer search, token position, decode) transcribe `Task.truncate_context` of
HazyResearch/prefix-linear-attention `lm-eval-harness/lm_eval/api/task.py` (commit 7490f22).
"""

from __future__ import annotations

import re

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


def truncate_context(tokens, answer_pos: int, *, context_length: int = 1000, answer_length: int = 50):
    """The reference's cut (`lm_eval/api/task.py`, `Task.truncate_context`) on token ids.

    With desired = context_length - answer_length (a buffer for the answer) and a = answer_pos, the token
    index where the answer starts: start = max(0, a - desired // 2), end = min(n, a + desired - (a - start)),
    and the result is tokens[start:end]. Like the reference, this also cuts a document that would fit
    (a late answer drops the head), and a window can be shorter than `desired`.
    """
    tokens = _tokens("tokens", tokens)
    desired = context_length - answer_length
    if desired < 1:
        raise ValueError(
            f"context_length - answer_length must be positive, but got {context_length} - {answer_length}."
        )
    if answer_pos < 0:
        raise ValueError(f"answer_pos must be a token index >= 0, but got {answer_pos}.")
    start = max(0, answer_pos - desired // 2)
    end = min(tokens.size, answer_pos + desired - (answer_pos - start))
    return tokens[start:end]


def truncate_context_text(
    context: str,
    answers,
    encode,
    decode,
    *,
    alt_answers=(),
    tok_pos: int | None = None,
    context_length: int = 1000,
    answer_length: int = 50,
) -> str | None:
    """`Task.truncate_context` of the reference on text: the document cut to (context_length -
    answer_length) tokens around the answer, or None where the reference skips the document.

    context: the document (stripped first, as the reference does). answers: one answer per answer key
    (a list value counts by its first element); any answer that is empty or one character long skips the
    document. The answer position is the earliest case-insensitive match of any answer, else of the first
    `alt_answers` entry that matches; with no answer keys it is 0. encode: text -> token ids (the
    tokenizer, special tokens as the reference's `batch_encode_plus`), decode: ids -> text
    (skip_special_tokens). Reference quirk kept: when no answer is found the position is -1, and
    `context[:-1]` (all but the last character) gives the token position, unless `tok_pos` is given and
    that prefix is longer than the window.
    """
    desired = context_length - answer_length
    context = context.strip()
    doc_tokens = list(encode(context))
    answers = [answers] if isinstance(answers, str) else list(answers)
    pos = -1
    for answer in answers:
        if isinstance(answer, (list, tuple)):
            answer = answer[0]
        if answer == "" or len(answer) <= 1:
            return None
        if match := re.compile(re.escape(answer), re.IGNORECASE).search(context):
            if pos == -1 or pos > match.start():
                pos = match.start()
    if pos < 0:
        for answer in alt_answers:
            if match := re.compile(re.escape(answer), re.IGNORECASE).search(context):
                if pos == -1 or pos > match.start():
                    pos = match.start()
            if pos >= 0:
                break
    if not answers:
        pos = 0
    short_tokens = list(encode(context[:pos]))
    tok = len(short_tokens)
    if pos == -1 and tok_pos is not None and len(short_tokens) > desired:
        tok = tok_pos
    return decode(
        [
            int(t)
            for t in truncate_context(
                np.asarray(doc_tokens, np.int64),
                tok,
                context_length=context_length,
                answer_length=answer_length,
            )
        ]
    )


def jrt_prompt_text(doc, template: str = "nq") -> str:
    """The reference's twice-read prompt of one document (`lm_eval/tasks/based_*/task.py`, `*Twice`),
    with the reference's text cleaning, from the document's fields:

      "swde" (text, key):   drop everything from "Summary of information above..." on, strip trailing
                            "{key}:" repeats, strip newlines/dots/space, end with "." ->
                            "Information about {Key}. " + ctx + "\n" + ctx + " {Key}:"
      "fda" (text, key):    the same without the summary cut and with only newline/dot stripping
      "nq", "drop" (context, question, orig_question): strip trailing question repeats, ctx =
                            context.strip().strip(".").strip() + "." ->
                            orig_question.strip(":") + " " + ctx + "\n" + ctx + " " + question
      "triviaqa":           the same after removing [PAR] [DOC] [TLE], with orig_question unstripped
      "squad" (context, question, text): question + " " + context.split("Question:")[0] + "\n" + text.strip()
    """
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, but got {template!r}.")
    need = _FIELDS[template]
    missing = [k for k in need if k not in doc]
    if missing:
        raise ValueError(
            f"The {template!r} template needs the fields {need}, but the document lacks {missing}."
        )
    if template in ("swde", "fda"):
        text, key = doc["text"], doc["key"]
        if template == "swde":
            while text.find("Summary of information above...") >= 0:
                text = text.split("Summary of information above...")[0]
        question = key + ":"
        while text.lower().endswith(question.lower()):
            text = text[: -len(question)]
        question = key[0].upper() + key[1:] + ":"
        if template == "swde":
            out = text.strip("\n").strip(".").strip().strip("\n").strip()
        else:
            out = text.strip("\n").strip(".")
        if not out.endswith("."):
            out += "."
        return f"Information about {question.strip(':')}. " + out + "\n" + out + " " + question
    if template == "squad":
        return doc["question"] + " " + doc["context"].split("Question:")[0] + "\n" + doc["text"].strip()
    context = doc["context"].strip()
    if template == "triviaqa":
        context = re.sub(r"\[PAR\]|\[DOC\]|\[TLE\]", "", context)
    question = doc["question"].strip()
    while context.lower().endswith(question.lower()):
        context = context[: -len(question)]
    out = context.strip().strip(".").strip() + "."
    out += "\n" + out + " " + question
    intro = doc["orig_question"] if template == "triviaqa" else doc["orig_question"].strip(":")
    return intro + " " + out


_FIELDS = {
    "swde": ("text", "key"),
    "fda": ("text", "key"),
    "nq": ("context", "question", "orig_question"),
    "drop": ("context", "question", "orig_question"),
    "triviaqa": ("context", "question", "orig_question"),
    "squad": ("context", "question", "text"),
}


def contains_match(prediction: str, answers) -> bool:
    """The reference's `contains` metric: any answer is a case-insensitive substring of the prediction
    (the prediction is cut at the first newline, where the reference stops decoding)."""
    pred = prediction.split("\n")[0].lower()
    answers = [answers] if isinstance(answers, str) else list(answers)
    return any(a.lower() in pred for a in answers)
