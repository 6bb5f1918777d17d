"""Text-generation examples: render a row into prompt / response segments, tokenise, mask the prompt.

Segments are tokenised one by one and concatenated, so the boundary between what is masked (-100) and what is
trained is exact — no re-alignment of character offsets — and a prompt tokenises the same way it will at inference.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from jinja2 import TemplateError

from llmkit.data.tokens import IGNORE_INDEX, LengthPolicy, TokenStats
from llmkit.errors import DataError, RecipeError, first_line

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}"
)
ALPACA_INPUT = "\n\n### Input:\n{input}"
ALPACA_RESPONSE = "\n\n### Response:\n"

# A ChatML template for tokenizers without one (GPT-2, base models): data.template 'chat' then still works.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

Segment = tuple[str, bool]  # (text, trained?)


def uses_chat_template(fmt: str, template: str, tokenizer: Any) -> bool:
    """Whether prompts are rendered with a chat template: always for chat rows; for alpaca rows when asked, or on
    'auto' when the tokenizer has one (an instruct model should be tuned in the format it is prompted in)."""
    if fmt == "chat":
        return True
    if fmt == "alpaca":
        return template == "chat" or (template == "auto" and bool(getattr(tokenizer, "chat_template", None)))
    return False


def _chat_ready(fmt: str, template: str, tokenizer: Any) -> bool:
    """Whether rows render with a chat template; a tokenizer without one gets ChatML (saved with the run)."""
    use_chat = uses_chat_template(fmt, template, tokenizer)
    if use_chat and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    return use_chat


def prompt_ids(
    rows: list[Mapping[str, Any]], *, fmt: str, tokenizer: Any, template: str, system_prompt: str | None
) -> list[list[int]]:
    """Generation prompts for rows without a response, tokenised exactly as training tokenised their prompts."""
    use_chat = _chat_ready(fmt, template, tokenizer)
    tok = Tokenizing.for_format(tokenizer, use_chat)
    return [tok.prompt_ids(generation_prompt(row, fmt, use_chat, tokenizer, system_prompt)) for row in rows]


def render(
    row: Mapping[str, Any], fmt: str, use_chat: bool, tokenizer: Any, system_prompt: str | None
) -> list[Segment]:
    """The row as (text, trained) segments, in order."""
    if fmt == "text":
        return [(row["text"], True)]
    if fmt == "alpaca":
        if use_chat:
            return chat_segments(
                [{"role": "user", "content": alpaca_user(row)}, {"role": "assistant", "content": row["output"]}],
                tokenizer,
                system_prompt,
            )
        return [(alpaca_prompt(row), False), (row["output"], True)]
    if fmt == "chat":
        return chat_segments(list(row["messages"]), tokenizer, system_prompt)
    raise ValueError(f"format {fmt!r} does not produce text segments")


def generation_prompt(
    row: Mapping[str, Any], fmt: str, use_chat: bool, tokenizer: Any, system_prompt: str | None
) -> str:
    """What a trained model is prompted with to answer `row` (which has no output): exactly the text `render` masks
    before the response in training, so generation sees the template the model was tuned in."""
    if fmt == "text":
        return row["text"]
    if fmt == "alpaca" and not use_chat:
        return alpaca_prompt(row)
    messages = [{"role": "user", "content": alpaca_user(row)}] if fmt == "alpaca" else list(row["messages"])
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return _apply(tokenizer, messages, generation_prompt=True)


def alpaca_user(row: Mapping[str, Any]) -> str:
    """An alpaca row's instruction and input as one user message, for chat templates."""
    return row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")


def alpaca_prompt(row: Mapping[str, Any]) -> str:
    """An alpaca row's prompt in the Alpaca text format, up to where the response starts."""
    prompt = ALPACA_PROMPT.format(instruction=row["instruction"])
    if row.get("input"):
        prompt += ALPACA_INPUT.format(input=row["input"])
    return prompt + ALPACA_RESPONSE


def chat_segments(messages: list[dict[str, str]], tokenizer: Any, system_prompt: str | None) -> list[Segment]:
    """Split a rendered conversation so that each assistant turn (with the template's end-of-turn marker) is trained
    and everything else is masked. Works by rendering growing prefixes of the conversation."""
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    segments: list[Segment] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _apply(tokenizer, messages[:i], generation_prompt=True)
        full = _apply(tokenizer, messages[: i + 1], generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise RecipeError(
                "data.format: this tokenizer's chat template renders earlier turns differently as the chat grows, "
                "so assistant turns cannot be masked exactly; use data.format alpaca with data.template alpaca."
            )
        segments += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    return [(text, trained) for text, trained in segments if text]


def _apply(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    if not messages:
        # What precedes the first turn: render a lone user turn and keep what comes before its content.
        probe = "\x00PROBE\x00"
        text = tokenizer.apply_chat_template([{"role": "user", "content": probe}], tokenize=False)
        return text[: text.index(probe)] if probe in text else ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


@dataclass
class Tokenizing:
    """What turning segments into ids needs to know about the tokenizer, computed once."""

    tokenizer: Any
    prefix: list[int]  # special tokens the tokenizer puts first (BOS), if any
    eos_id: int | None
    append_eos: bool  # plain templates have no end marker of their own, so EOS is appended and trained

    @classmethod
    def for_format(cls, tokenizer: Any, use_chat: bool) -> Tokenizing:
        with_special = tokenizer("a")["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        start = with_special.index(plain[0]) if plain and plain[0] in with_special else 0
        prefix = list(with_special[:start])
        if not use_chat and tokenizer.eos_token_id is None:
            raise RecipeError("model: the tokenizer has no EOS token, so the model could never learn to stop.")
        return cls(tokenizer, prefix, tokenizer.eos_token_id, append_eos=not use_chat)

    def prompt_ids(self, prompt: str) -> list[int]:
        """A generation prompt tokenised as training tokenised it (BOS, then the text): no EOS, nothing trained."""
        return self.encode([(prompt, False)], append_eos=False)[0]

    def encode(self, segments: list[Segment], append_eos: bool | None = None) -> tuple[list[int], list[int]]:
        return next(self.encode_many([segments], append_eos))

    def encode_many(
        self, rows: list[list[Segment]], append_eos: bool | None = None
    ) -> Iterator[tuple[list[int], list[int]]]:
        """(ids, labels) of each row's segments; every segment of every row goes to the tokenizer in one call, which
        costs far less than a call per segment and gives the same ids."""
        texts = [text for segments in rows for text, _ in segments]
        pieces = iter(self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
        bos_text = getattr(self.tokenizer, "bos_token", None)
        eos = (self.append_eos if append_eos is None else append_eos) and self.eos_id is not None
        for segments in rows:
            ids: list[int] = []
            labels: list[int] = []
            first = segments[0][0] if segments else ""
            if self.prefix and not (bos_text and first.startswith(bos_text)):
                ids += self.prefix
                labels += [IGNORE_INDEX] * len(self.prefix)
            for _, trained in segments:
                piece = next(pieces)
                ids += piece
                labels += piece if trained else [IGNORE_INDEX] * len(piece)
            if eos:
                ids.append(self.eos_id)
                labels.append(self.eos_id)
            yield ids, labels


def build_examples(
    rows: list[Mapping[str, Any]],
    where: list[str],
    *,
    fmt: str,
    tokenizer: Any,
    template: str,
    system_prompt: str | None,
    policy: LengthPolicy,
    stop_ids: set[int],
    check: bool = True,
) -> tuple[list[dict[str, np.ndarray]], list[str], TokenStats]:
    """Tokenised examples ({input_ids, labels}), where each came from, and counts of what happened to the rows.
    Rows whose stop token is never trained are counted in the stats and refused (`check_stoppable`) here, or — with
    `check=False`, when the rows are one batch of a split — once for the whole split by the caller."""
    use_chat = _chat_ready(fmt, template, tokenizer)
    tok = Tokenizing.for_format(tokenizer, use_chat)
    rendered: list[list[Segment] | DataError] = []
    for row, origin in zip(rows, where, strict=False):
        try:
            rendered.append(render(row, fmt, use_chat, tokenizer, system_prompt))
        except TemplateError as exc:  # e.g. a Gemma-style template that refuses a system turn
            rendered.append(
                DataError(
                    f"the model's chat template refuses this conversation ({first_line(exc)}); drop "
                    "data.system_prompt or the turns it rejects, or set data.template: alpaca",
                    origin,
                )
            )
    encoded = tok.encode_many([r for r in rendered if not isinstance(r, DataError)])
    examples: list[dict[str, np.ndarray]] = []
    origins: list[str] = []
    stats = TokenStats(rows=len(rows), target_tokens=0)
    width = policy.max_length
    for segments, origin in zip(rendered, where, strict=False):
        if isinstance(segments, DataError):
            raise segments
        ids, labels = next(encoded)
        decision = policy.decide(len(ids), origin, stats)
        if decision == "drop":
            continue
        pieces = [(ids, labels)]
        if decision == "truncate":
            pieces = [(ids[:width], labels[:width])]
        elif decision == "split":  # consecutive windows of a long document
            pieces = [(ids[i : i + width], labels[i : i + width]) for i in range(0, len(ids), width)]
            stats.split_pieces += len(pieces) - 1
        elif stop_ids and not any(label in stop_ids for label in labels):
            stats.flag("unstoppable", origin)
        for piece_ids, piece_labels in pieces:
            trained = sum(1 for label in piece_labels[1:] if label != IGNORE_INDEX)
            if not trained:
                stats.dropped_no_target += 1
                continue
            examples.append(
                {"input_ids": np.asarray(piece_ids, dtype=np.int64), "labels": np.asarray(piece_labels, dtype=np.int64)}
            )
            origins.append(origin)
            stats.add(len(piece_ids))
            stats.target_tokens += trained
    if check:
        check_stoppable(stats, fmt, tokenizer, stop_ids)
    return examples, origins, stats


def check_stoppable(stats: TokenStats, fmt: str, tokenizer: Any, stop_ids: set[int]) -> None:
    """Refuse rows that were not truncated but never train the stop token: the model would not learn to stop."""
    count = stats.flag_counts.get("unstoppable", 0)
    if count and fmt != "text":
        names = ", ".join(repr(tokenizer.convert_ids_to_tokens(i)) for i in sorted(stop_ids))
        raise RecipeError(
            f"data: the stop token ({names}) is never a training target in {count} of {stats.rows} rows "
            f"(first: {stats.flagged['unstoppable'][0]}), so the model would not learn to stop; the chat template's "
            "end-of-turn marker must be a stop token — set data.template: alpaca, or use a model whose EOS ends its "
            "turns."
        )
