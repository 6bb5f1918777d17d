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

from llmkit.data.collate import Collator
from llmkit.data.load import load_splits
from llmkit.data.seq2seq import Encoder as Seq2SeqEncoder
from llmkit.data.sft import IGNORE, build_examples
from llmkit.data.sources import Rows
from llmkit.data.tokens import TokenStats
from llmkit.errors import DataError
from llmkit.job import Job, Prepared, say
from llmkit.models import stop_token_ids
from llmkit.tasks.sections import DistillSection

TASKS = ("label", "rationale")


def prepare(job: Job, tokenizer: PreTrainedTokenizerBase, head: str) -> Prepared:
    """One item per input: {"label": example, "rationale": example}; inputs whose either example is dropped (e.g.
    longer than data.max_length) are dropped whole, so every batch pairs the two tasks."""
    train_rows, eval_rows = load_splits(job.recipe.data)
    prepared = Prepared(*_pairs(job, tokenizer, head, train_rows), fingerprints={"train": train_rows.describe()})
    if not prepared.train:
        raise DataError("no inputs are left after tokenising; raise data.max_length", train_rows.name)
    if eval_rows is not None:
        prepared.held_out, prepared.held_out_where = _pairs(job, tokenizer, head, eval_rows)
        prepared.fingerprints["validation"] = eval_rows.describe()
    return prepared


def _pairs(job: Job, tokenizer: PreTrainedTokenizerBase, head: str, rows: Rows) -> tuple[list[dict], list[str]]:
    section = job.recipe.distill or DistillSection()
    encode = _encoder(job, tokenizer, head)
    by_task = {}
    for task, prefix in zip(TASKS, (section.label_prefix, section.rationale_prefix), strict=True):
        task_rows = [{"source": prefix + row["input"], "target": row[task]} for row in rows.rows]
        examples, origins = encode(task_rows, rows.where)
        by_task[task] = dict(zip(origins, examples, strict=True))
        say(f"{task} task: {len(examples)} examples from {len(rows)} rows of {rows.name}")
    kept = [where for where in rows.where if all(where in by_task[task] for task in TASKS)]
    return [{task: by_task[task][where] for task in TASKS} for where in kept], kept


def _encoder(job: Job, tokenizer: PreTrainedTokenizerBase, head: str) -> Callable[..., tuple[list, list]]:
    """source/target rows → (examples, origins), by the student's own data path."""
    data = job.recipe.data
    if head == "causal_lm":
        stop_ids = stop_token_ids(job.base, tokenizer)

        def decoder(rows: list[dict[str, str]], where: list[str]) -> tuple[list, list]:
            alpaca = [{"instruction": r["source"], "output": r["target"]} for r in rows]
            examples, origins, _ = build_examples(
                alpaca,
                where,
                fmt="alpaca",
                tokenizer=tokenizer,
                template=data.template,
                system_prompt=data.system_prompt,
                max_length=data.max_length,
                overlong=data.overlong,
                stop_ids=stop_ids,
            )
            return examples, origins

        return decoder
    encoder = Seq2SeqEncoder(tokenizer, "", data.max_length, data.max_target_length or data.max_length, data.overlong)

    def seq2seq(rows: list[dict[str, str]], where: list[str]) -> tuple[list, list]:
        """As task seq2seq encodes: the prefixed input → input ids, the label or rationale → labels."""
        stats = TokenStats(rows=len(rows))
        kept = [
            (ex, origin) for row, origin in zip(rows, where, strict=True) if (ex := encoder.encode(row, origin, stats))
        ]
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


def run(job: Job, head: str) -> dict[str, Any]:
    from llmkit.distill.trainer import LossTrainer, TwoTasks

    section = job.recipe.distill or DistillSection()
    tokenizer = job.tokenizer()
    prepared = prepare(job, tokenizer, head)
    job.fingerprints = prepared.fingerprints
    args = job.training_args(evaluate=bool(prepared.held_out))
    job.plan_steps(len(prepared.train), args)
    model = job.model(tokenizer, head=head)
    trainer = LossTrainer(
        model=model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.held_out or None,
        data_collator=TwoTaskCollator(
            Collator(tokenizer.pad_token_id)
            if head == "causal_lm"  # an encoder-decoder's labels are padded apart, its decoder inputs built from them
            else DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=IGNORE)
        ),
        processing_class=tokenizer,
        callbacks=job.callbacks,
        loss=TwoTasks(section.rationale_weight, causal=head == "causal_lm"),
    )
    metrics: dict[str, Any] = {}
    if prepared.held_out:
        metrics["label_accuracy_before"] = label_accuracy(model, tokenizer, prepared.held_out, head)
        say(f"held-out label accuracy before training: {metrics['label_accuracy_before']:.3f}")
    metrics.update(job.train(trainer))  # held-out label loss and rationale loss, before and after
    if prepared.held_out:
        metrics["label_accuracy"] = label_accuracy(model, tokenizer, prepared.held_out, head)
        say(
            f"held-out label accuracy after training:  {metrics['label_accuracy']:.3f} "
            f"(before: {metrics['label_accuracy_before']:.3f})"
        )
    job.save(trainer.model, tokenizer, head=head, label_prefix=section.label_prefix)
    return metrics


@torch.no_grad()
def label_accuracy(model: Any, tokenizer: PreTrainedTokenizerBase, items: list[dict[str, Any]], head: str) -> float:
    """Share of inputs whose label the student generates exactly (greedy, label task only — as at inference)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for item in items:
        ids, labels = list(item["label"]["input_ids"]), list(item["label"]["labels"])
        if head == "causal_lm":
            start = next(i for i, label in enumerate(labels) if label != IGNORE)
            prompt, target = ids[:start], ids[start:]
        else:
            prompt, target = ids, [t for t in labels if t != IGNORE]
        out = model.generate(
            input_ids=torch.tensor([prompt], device=device),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=device),
            max_new_tokens=len(target) + 2,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )[0]
        answer = out[len(prompt) :] if head == "causal_lm" else out
        said = tokenizer.decode(answer, skip_special_tokens=True).strip()
        correct += said == tokenizer.decode(target, skip_special_tokens=True).strip()
    model.train(was_training)
    return correct / len(items)
