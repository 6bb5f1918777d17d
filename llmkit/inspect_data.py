"""`llmkit inspect-data`: one example as the model will see it, with what is masked and what is trained."""

from __future__ import annotations

from typing import Any

from llmkit.data.tokens import IGNORE_INDEX
from llmkit.errors import LlmkitError
from llmkit.prepare import prepare_recipe
from llmkit.recipe import Recipe

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


def show_example(recipe: Recipe, index: int = 0, split: str = "train", tokens: bool = False) -> str:
    env, tokenizer, prepared = prepare_recipe(recipe)
    examples, where = (
        (prepared.train, prepared.train_where)
        if split == "train"
        else (prepared.held_out or [], prepared.held_out_where or [])
    )
    if not 0 <= index < len(examples):
        raise LlmkitError(f"--index {index} is out of range: the {split} split has {len(examples)} examples.")
    example = examples[index]
    head = env.head
    if "input_ids" in example:
        return render_example(example, where[index], tokenizer, tokens, head=head)
    if "chosen_ids" in example:  # a reward model's pair: each answer as the model scores it
        return f"source: {where[index]}\n\n" + "\n\n".join(
            f"{key} ({len(example[key + '_ids'])} tokens):\n{tokenizer.decode(example[key + '_ids'])}"
            for key in ("chosen", "rejected")
        )
    if "prompt" in example and "chosen" not in example:  # a prompt for online RL, rendered as the model will see it
        from llmkit.data.prompts import prompt_ids

        ids = prompt_ids(example["prompt"], tokenizer)
        others = "".join(f"\n{key}: {value!r}" for key, value in example.items() if key != "prompt")
        return f"source: {where[index]}\nprompt tokens: {len(ids)}\n\n{tokenizer.decode(ids)}\n{others}"
    if all(isinstance(part, dict) and "input_ids" in part for part in example.values()):  # one example per task
        return "\n\n".join(
            f"== {name} ==\n" + render_example(part, where[index], tokenizer, tokens, head=head)
            for name, part in example.items()
        )
    return render_pair(example, where[index], tokenizer)  # a preference pair, which TRL tokenises: show it as TRL will


def render_pair(pair: dict[str, Any], where: str, tokenizer: Any) -> str:
    """The prompt once, then each answer as the tokens the preference loss scores (marked ⟦…⟧)."""
    from llmkit.data.preference import tokenize_pair

    ids = tokenize_pair(pair, tokenizer)
    lines = [f"source: {where}", f"prompt tokens: {len(ids['prompt_ids'])}", "", tokenizer.decode(ids["prompt_ids"])]
    for key in ("chosen", "rejected"):
        answer = ids[f"{key}_ids"]
        lines += ["", f"{key} ({len(answer)} tokens): {TRAINED_OPEN}{tokenizer.decode(answer)}{TRAINED_CLOSE}"]
    return "\n".join(lines)


def render_example(
    example: dict[str, Any], where: str, tokenizer: Any, tokens: bool = False, head: str = "causal_lm"
) -> str:
    """Causal LM examples show their label mask; a classifier's its label id; a seq2seq example its target."""
    ids_in = example["input_ids"]
    ids = [int(i) for i in ids_in]
    labels = example.get("labels")
    lines = [f"source: {where}", f"tokens: {len(ids)}"]
    if head == "seq2seq_lm" and labels is not None:
        target = [int(t) for t in labels if int(t) != IGNORE_INDEX]
        lines += ["", tokenizer.decode(ids), "", f"target ({len(target)} tokens):", tokenizer.decode(target)]
        return "\n".join(lines)
    if head == "causal_lm" and labels is not None and getattr(labels, "shape", 0) == getattr(ids_in, "shape", 0):
        labels = [int(x) for x in labels]
        trained = sum(1 for x in labels[1:] if x != IGNORE_INDEX)
        lines.append(f"trained tokens: {trained} (marked {TRAINED_OPEN}…{TRAINED_CLOSE}; everything else is -100)")
        lines += ["", _marked_text(ids, labels, tokenizer)]
        if tokens:
            lines += ["", f"{'pos':>5}  {'id':>7}  {'label':>7}  token"]
            lines += [
                f"{i:>5}  {t:>7}  {lab:>7}  {tokenizer.convert_ids_to_tokens(t)!r}"
                for i, (t, lab) in enumerate(zip(ids, labels, strict=False))
            ]
    else:
        lines += ["", tokenizer.decode(ids)]
        if labels is not None:
            lines += ["", f"labels: {labels!r}"]
    return "\n".join(lines)


def _marked_text(ids: list[int], labels: list[int], tokenizer: Any) -> str:
    """Decode runs of masked and trained tokens separately and bracket the trained runs."""
    out, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            text = tokenizer.decode(ids[start:i])
            out.append(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if labels[start] != IGNORE_INDEX else text)
            start = i
    return "".join(out)
