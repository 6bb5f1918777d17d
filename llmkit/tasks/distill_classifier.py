"""Soft-target distillation for classifiers: a finished classifier (e.g. a BERT fine-tuned by `llmkit train`)
teaches a student classifier (a smaller BERT, a decoder) on the same labels.

The teacher and the student need not share a tokenizer: each row is encoded twice, the teacher scores its own
encoding once before training (its logits cached on disk with `distill.cache_teacher_logits`), and the student
trains on `llmkit.distill.loss` against those logits. Label order follows the student's data; the teacher's columns
are matched to it by label name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import AutoConfig, DataCollatorWithPadding, PreTrainedTokenizerBase

from llmkit.console import say
from llmkit.data.prepared import Prepared
from llmkit.data.sources import Rows
from llmkit.distill import cache
from llmkit.distill.teacher import TeacherRef, load_teacher, resolve_teacher, teacher_tokenizer
from llmkit.distill.trainer import LossTrainer, SoftTargets, TeacherCollator
from llmkit.errors import RecipeError
from llmkit.fit import fit
from llmkit.metrics import ExtraMetrics, compute_classification
from llmkit.run import RunEnv, TaskResult, build_model, total_steps, training_args
from llmkit.tasks import classification
from llmkit.tasks.classification import HEADLINE, label_kwargs, prepare_labelled

TEACHER_INPUTS = "teacher_inputs"


def prepare(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """The student's examples, as task classification builds them."""
    return prepare_labelled(env, tokenizer)[0]


def run(env: RunEnv) -> TaskResult:
    section = env.recipe.distill
    tokenizer = env.tokenizer()
    ref = resolve_teacher(section.teacher, env.recipe.model.dtype)
    teacher_tok = teacher_tokenizer(ref)
    prepared, names = prepare_labelled(env, tokenizer, _paired_encoder(env, tokenizer, teacher_tok), teacher_tok)
    # the teacher's logits join each example, so the examples become Python rows
    prepared.train, prepared.held_out, prepared.test = (
        split.to_list() if split else [] for split in (prepared.train, prepared.held_out, prepared.test)
    )
    splits = [prepared.train, prepared.held_out, prepared.test]
    _attach_teacher_logits(env, ref, teacher_tok, names, splits)

    args = training_args(env, evaluate=bool(prepared.held_out))
    steps = total_steps(len(prepared.train), args)
    built = build_model(env, tokenizer, total_steps=steps, head="seq_cls", **label_kwargs(names))
    trainer = LossTrainer(
        model=built.model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.held_out or None,
        data_collator=TeacherCollator(DataCollatorWithPadding(tokenizer)),
        processing_class=tokenizer,
        compute_metrics=compute_classification(ExtraMetrics.of(env)),
        loss=SoftTargets(None, section.alpha, section.temperature, causal=False),
    )
    metrics = fit(trainer, env, built, test=prepared.test, headline_keys=HEADLINE)
    data = {**prepared.sources, "teacher": section.teacher}
    return TaskResult(metrics, built, tokenizer, data=data, meta={"teacher": section.teacher})


def _paired_encoder(env: RunEnv, student: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase) -> Any:
    """Encode rows for the student as the classification task does, and each kept row for the teacher too (never
    dropped: the teacher reads a truncated row where the student's limit drops nothing)."""
    own = classification.encoder(env.recipe, student)
    theirs = classification.encoder(env.recipe, teacher, overlong="truncate")

    def encode(rows: Rows, label_ids: Mapping[str, int]) -> tuple[list[dict[str, Any]], list[str], Any]:
        examples, where, stats = own.examples(rows, label_ids)
        teacher_examples, teacher_where, _ = theirs.examples(rows, label_ids)
        by_origin = dict(zip(teacher_where, teacher_examples, strict=True))
        for example, origin in zip(examples, where, strict=True):
            example[TEACHER_INPUTS] = by_origin[origin]
        return examples, where, stats

    return encode


def _attach_teacher_logits(
    env: RunEnv, ref: TeacherRef, tokenizer: PreTrainedTokenizerBase, names: list[str], splits: list[list[dict]]
) -> None:
    """Score every example with the teacher once; put its logits, in the student's label order, on the example."""
    section = env.recipe.distill
    teacher = None

    def load() -> Any:
        nonlocal teacher
        teacher = teacher or load_teacher(ref, "seq_cls", tokenizer)
        return teacher

    order = _label_order(_teacher_labels(ref), names, section.teacher)
    batch_size = env.recipe.training.per_device_eval_batch_size or 8
    for examples in splits:
        if not examples:
            continue
        inputs = [example.pop(TEACHER_INPUTS) for example in examples]
        key = cache.cache_key(ref.fingerprint(), inputs, causal=False)
        collate = DataCollatorWithPadding(tokenizer)
        logits = cache.teacher_logits(inputs, key, load, collate, False, batch_size, store=section.cache_teacher_logits)
        for example, row in zip(examples, logits, strict=True):
            example["teacher_logits"] = row[:, order]
    if teacher is not None:
        say(f"teacher: {section.teacher} scored the data; it is not needed during training")


def _teacher_labels(ref: TeacherRef) -> list[str]:
    """The teacher's label names in logit order, read without loading its weights."""
    if ref.run_dir is not None:
        id2label = ref.info.get("head_kwargs", {}).get("id2label")
        if id2label:
            return [str(id2label[str(i)]) for i in range(len(id2label))]
    config = AutoConfig.from_pretrained(ref.run_dir or ref.base.path)
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def _label_order(theirs: list[str], names: list[str], name: str) -> list[int]:
    """For each of the student's labels, the teacher's logit column of the same name."""
    if sorted(theirs) != sorted(names):
        raise RecipeError(
            f"distill.teacher: '{name}' predicts the labels {theirs}, but the data's labels are {names}; distil from "
            "a classifier trained on the same labels (classification.labels sets their names and order)."
        )
    return [theirs.index(label) for label in names]
