"""`task: distill`: a student learns from a frozen teacher's soft targets (causal LMs on SFT data, classifiers on
classification data), or — with data.format rationale — from rationales the teacher wrote with `llmkit rationales`.

Soft-target distillation reuses the student task's own data path (SFT examples, ...) and adds the teacher's logits,
live or from the cache; the loss is `llmkit.distill.loss`.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from llmkit.data.collate import Collator
from llmkit.distill import cache
from llmkit.distill.teacher import check_same_vocabulary, load_teacher, resolve_teacher, teacher_tokenizer
from llmkit.distill.trainer import LossTrainer, SoftTargets, TeacherCollator
from llmkit.job import Job, Prepared
from llmkit.tasks import classification, sft
from llmkit.tasks.sections import DistillSection


def _section(job: Job) -> DistillSection:
    return job.recipe.distill or DistillSection()


def student_head(job: Job) -> str:
    """The student's head follows its data: a classifier, or a text generator (T5 generates with its decoder)."""
    kind = _section(job).kind(job.recipe.data.format)
    if kind == "classification":
        return "seq_cls"
    return "seq2seq_lm" if job.base.family == "t5" else "causal_lm"


def prepare(job: Job, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """The student's examples, as its own task builds them (used by `run` and `llmkit inspect-data`)."""
    kind = _section(job).kind(job.recipe.data.format)
    if kind == "rationale":
        from llmkit.distill import rationale

        return rationale.prepare(job, tokenizer, student_head(job))
    if kind == "classification":
        return classification.prepare(job, tokenizer)
    return sft.prepare(job, tokenizer)


def run(job: Job) -> dict[str, Any]:
    section = _section(job)
    if section.kind(job.recipe.data.format) == "rationale":
        from llmkit.distill import rationale

        return rationale.run(job, student_head(job))
    if section.kind(job.recipe.data.format) == "classification":
        from llmkit.distill import classifier

        return classifier.run(job)
    head = student_head(job)
    causal = head == "causal_lm"
    tokenizer = job.tokenizer()
    prepared = prepare(job, tokenizer)
    job.fingerprints = prepared.fingerprints
    ref = resolve_teacher(section.teacher, job.recipe.model.dtype)
    if causal:
        check_same_vocabulary(tokenizer, teacher_tokenizer(ref), section.teacher)
    job.fingerprints["teacher"] = section.teacher

    collate = Collator(tokenizer.pad_token_id)
    teacher = None
    if section.cache_teacher_logits:
        batch_size = job.recipe.training.per_device_eval_batch_size or 8

        def load() -> Any:
            nonlocal teacher
            teacher = teacher or load_teacher(ref, head, tokenizer)
            return teacher

        for examples in (prepared.train, prepared.held_out or []):
            key = cache.cache_key(ref.fingerprint(), examples, causal)
            logits = cache.teacher_logits(examples, key, load, collate, causal, batch_size)
            for example, row in zip(examples, logits, strict=True):
                example["teacher_logits"] = row
        teacher = None  # every batch carries its teacher logits now; free the teacher
    else:
        teacher = load_teacher(ref, head, tokenizer)
    teacher_weights = _fingerprint(teacher)

    args = job.training_args(evaluate=bool(prepared.held_out))
    job.plan_steps(len(prepared.train), args)
    trainer = LossTrainer(
        model=job.model(tokenizer, head=head),
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.held_out or None,
        data_collator=TeacherCollator(collate),
        processing_class=tokenizer,
        callbacks=job.callbacks,
        loss=SoftTargets(teacher, section.alpha, section.temperature, causal),
    )
    metrics = job.train(trainer)  # held-out loss, cross-entropy and KL to the teacher, before and after
    if teacher is not None and _fingerprint(teacher) != teacher_weights:
        raise RuntimeError("the teacher's weights changed during distillation; this is a bug in llmkit")
    job.save(trainer.model, tokenizer, head=head, teacher=section.teacher)
    return metrics


def _fingerprint(model: Any) -> float | None:
    """A cheap checksum of every weight, to assert the teacher is only ever read."""
    if model is None:
        return None
    return float(sum(p.double().sum() + p.double().abs().sum() for p in model.parameters()))
