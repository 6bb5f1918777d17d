"""`task: distill`: a student learns from a frozen teacher's soft targets (causal LMs on SFT data here, classifiers on
classification data in `distill_classifier`), or — with data.format rationale — from rationales the teacher wrote
with `llmkit rationales` (`distill_rationale`).

Soft-target distillation reuses the student task's own data path (SFT examples, ...) and adds the teacher's logits,
live or from the cache; the loss is `llmkit.distill.loss`.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from llmkit import chunked
from llmkit.data.collate import Collator
from llmkit.data.prepared import Prepared
from llmkit.distill import cache
from llmkit.distill.teacher import check_same_vocabulary, load_teacher, resolve_teacher, teacher_tokenizer
from llmkit.distill.trainer import LossTrainer, SoftTargets, TeacherCollator
from llmkit.fit import fit
from llmkit.recipe.distill import DistillSection, distill_kind
from llmkit.run import RunEnv, TaskResult, build_model, total_steps, training_args
from llmkit.tasks import distill_classifier, distill_rationale, sft


def _section(env: RunEnv) -> DistillSection:
    return env.recipe.distill or DistillSection()


def prepare(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """The student's examples, as its own task builds them."""
    kind = distill_kind(env.recipe.data.format)
    if kind == "rationale":
        return distill_rationale.prepare(env, tokenizer)
    if kind == "classification":
        return distill_classifier.prepare(env, tokenizer)
    return sft.prepare(env, tokenizer)


def run(env: RunEnv) -> TaskResult:
    kind = distill_kind(env.recipe.data.format)
    if kind == "rationale":
        return distill_rationale.run(env)
    if kind == "classification":
        return distill_classifier.run(env)
    section = _section(env)
    head = env.head
    causal = head == "causal_lm"
    tokenizer = env.tokenizer()
    prepared = prepare(env, tokenizer)
    ref = resolve_teacher(section.teacher, env.recipe.model.dtype)
    if causal:
        check_same_vocabulary(tokenizer, teacher_tokenizer(ref), section.teacher)

    collate = Collator(tokenizer.pad_token_id)
    teacher = None
    if section.cache_teacher_logits:
        batch_size = env.recipe.training.per_device_eval_batch_size or 8

        def load() -> Any:
            nonlocal teacher
            teacher = teacher or load_teacher(ref, head, tokenizer)
            return teacher

        # the teacher's logits join each example, so the examples become Python rows
        prepared.train = prepared.train.to_list()
        prepared.held_out = prepared.held_out.to_list() if prepared.held_out else None
        for examples in (prepared.train, prepared.held_out or []):
            key = cache.cache_key(ref.fingerprint(), examples, causal)
            logits = cache.teacher_logits(examples, key, load, collate, causal, batch_size)
            for example, row in zip(examples, logits, strict=True):
                example["teacher_logits"] = row
        teacher = None  # every batch carries its teacher logits now; free the teacher
    else:
        teacher = load_teacher(ref, head, tokenizer)
    teacher_weights = _fingerprint(teacher)

    args = training_args(env, evaluate=bool(prepared.held_out))
    built = build_model(env, tokenizer, total_steps=total_steps(len(prepared.train), args))
    trainer = LossTrainer(
        model=built.model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.held_out or None,
        data_collator=TeacherCollator(collate),
        processing_class=tokenizer,
        loss=SoftTargets(teacher, section.alpha, section.temperature, causal),
    )
    if causal and chunked.enabled(trainer, built.model, env.recipe.training.chunked_loss):
        chunked.attach_loss(trainer, built.model, trainer.loss)
    metrics = fit(trainer, env, built)  # held-out loss, cross-entropy and KL to the teacher, before and after
    if teacher is not None and _fingerprint(teacher) != teacher_weights:
        raise RuntimeError("the teacher's weights changed during distillation; this is a bug in llmkit")
    data = {**prepared.sources, "teacher": section.teacher}
    return TaskResult(metrics, built, tokenizer, data=data, meta={"teacher": section.teacher})


def _fingerprint(model: Any) -> float | None:
    """A cheap checksum of every weight, to assert the teacher is only ever read."""
    if model is None:
        return None
    return float(sum(p.double().sum() + p.double().abs().sum() for p in model.parameters()))
