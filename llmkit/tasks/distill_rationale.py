"""Step 2 of rationale distillation ("Distilling step-by-step", Hsieh et al., 2023): the student learns two tasks on
the same inputs — predict the label (`distill.label_prefix`) and write the teacher's rationale
(`distill.rationale_prefix`) — with loss = label loss + rationale_weight · rationale loss. At inference only the label
task runs, so the rationale costs nothing once trained.

Each input gives one example per task, built by the student's own data path (a decoder: SFT's prompt masking; T5:
the seq2seq encoder), and a batch always holds both tasks for the same inputs, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from llmkit import chunked
from llmkit.console import say
from llmkit.data.cache import key_for
from llmkit.data.collate import Collator
from llmkit.data.prepared import Prepared, prepare_splits
from llmkit.data.seq2seq import Encoder as Seq2SeqEncoder
from llmkit.data.sft import build_examples
from llmkit.data.sources import Rows
from llmkit.data.tokens import IGNORE_INDEX, TokenStats
from llmkit.fit import fit
from llmkit.generation import generate
from llmkit.recipe.distill import DistillSection
from llmkit.run import RunEnv, TaskResult, build_model, total_steps, training_args
from llmkit.tasks.sft import text_options

TASKS = ("label", "rationale")


def prepare(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """One item per input: {"label": example, "rationale": example}; inputs whose either example is dropped (e.g.
    longer than data.max_length) are dropped whole, so every batch pairs the two tasks."""
    return prepare_splits(
        env.recipe.data,
        _pairs(env, tokenizer),
        "after tokenising; raise data.max_length",
        unit="inputs",
        key=key_for(env.recipe, tokenizer, head=env.head),
    )


def _pairs(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Callable[[Rows], tuple[list, list, TokenStats]]:
    section = env.recipe.distill or DistillSection()
    encode = _encoder(env, tokenizer)

    def pairs(rows: Rows) -> tuple[list, list, TokenStats]:
        by_task = {}
        for task, prefix in zip(TASKS, (section.label_prefix, section.rationale_prefix), strict=True):
            task_rows = [{"source": prefix + row["input"], "target": row[task]} for row in rows.rows]
            examples, origins = encode(task_rows, rows.where)
            by_task[task] = dict(zip(origins, examples, strict=True))
        kept = [where for where in rows.where if all(where in by_task[task] for task in TASKS)]
        items = [{task: by_task[task][where] for task in TASKS} for where in kept]
        # an input either of whose examples was dropped (longer than max_length) is dropped whole
        stats = TokenStats(rows=len(rows), unit="inputs", dropped_overlong=len(rows) - len(kept))
        for item in items:
            stats.add(sum(len(item[task]["input_ids"]) for task in TASKS))
        return items, kept, stats

    return pairs


def _encoder(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Callable[..., tuple[list, list]]:
    """source/target rows → (examples, origins), by the student's own data path."""
    if env.head == "causal_lm":
        options = text_options(env, tokenizer)
        options["fmt"] = "alpaca"

        def decoder(rows: list[dict[str, str]], where: list[str]) -> tuple[list, list]:
            alpaca = [{"instruction": r["source"], "output": r["target"]} for r in rows]
            examples, origins, _ = build_examples(alpaca, where, **options)
            return examples, origins

        return decoder
    encoder = Seq2SeqEncoder.for_data(tokenizer, env.recipe.data, prefix="")

    def seq2seq(rows: list[dict[str, str]], where: list[str]) -> tuple[list, list]:
        """As task seq2seq encodes: the prefixed input → input ids, the label or rationale → labels."""
        encoded = encoder.encode_all(rows, where, TokenStats(rows=len(rows)))
        kept = [(ex, origin) for ex, origin in zip(encoded, where, strict=True) if ex is not None]
        return [ex for ex, _ in kept], [origin for _, origin in kept]

    return seq2seq


class TwoTaskCollator:
    """Both tasks' examples of a batch of inputs in one padded batch, with `task` 0 (label) or 1 (rationale)."""

    def __init__(self, collate: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.collate = collate

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        out = self.collate([item[task] for task in TASKS for item in items])
        out["task"] = torch.tensor([i for i, _ in enumerate(TASKS) for _ in items])
        return out


def run(env: RunEnv) -> TaskResult:
    from llmkit.distill.trainer import LossTrainer, TwoTasks

    section = env.recipe.distill or DistillSection()
    head = env.head
    tokenizer = env.tokenizer()
    prepared = prepare(env, tokenizer)
    args = training_args(env, evaluate=bool(prepared.held_out))
    built = build_model(env, tokenizer, total_steps=total_steps(len(prepared.train), args))
    model = built.model
    trainer = LossTrainer(
        model=model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.held_out or None,
        data_collator=TwoTaskCollator(
            Collator(tokenizer.pad_token_id)
            if head == "causal_lm"  # an encoder-decoder's labels are padded apart, its decoder inputs built from them
            else DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=IGNORE_INDEX)
        ),
        processing_class=tokenizer,
        loss=TwoTasks(section.rationale_weight, causal=head == "causal_lm"),
    )
    if chunked.enabled(trainer, model, env.recipe.training.chunked_loss):
        chunked.attach_loss(trainer, model, trainer.loss)
    metrics: dict[str, Any] = {}
    if prepared.held_out:
        metrics["label_accuracy_before"] = label_accuracy(model, tokenizer, prepared.held_out, head)
        say(f"held-out label accuracy before training: {metrics['label_accuracy_before']:.3f}")
    metrics.update(fit(trainer, env, built))  # held-out label loss and rationale loss, before and after
    if prepared.held_out:
        metrics["label_accuracy"] = label_accuracy(model, tokenizer, prepared.held_out, head)
        say(
            f"held-out label accuracy after training:  {metrics['label_accuracy']:.3f} "
            f"(before: {metrics['label_accuracy_before']:.3f})"
        )
    return TaskResult(metrics, built, tokenizer, data=prepared.sources, meta={"label_prefix": section.label_prefix})


@torch.no_grad()
def label_accuracy(model: Any, tokenizer: PreTrainedTokenizerBase, items: list[dict[str, Any]], head: str) -> float:
    """Share of inputs whose label the student generates exactly (greedy, label task only — as at inference)."""
    was_training = model.training
    model.eval()
    correct = 0
    for item in items:
        ids, labels = list(item["label"]["input_ids"]), list(item["label"]["labels"])
        if head == "causal_lm":
            start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
            prompt, target = ids[:start], ids[start:]
        else:
            prompt, target = ids, [t for t in labels if t != IGNORE_INDEX]
        said = generate(model, tokenizer, [prompt], max_new_tokens=len(target) + 2, do_sample=False)[0]
        correct += said == tokenizer.decode(target, skip_special_tokens=True).strip()
    model.train(was_training)
    return correct / len(items)
