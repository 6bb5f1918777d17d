"""Seq2seq: an encoder-decoder (T5, BART) learns to write a target from a source — summaries, translations.

Runs on transformers' `Seq2SeqTrainer`, which generates at every evaluation (the recipe's `generation` settings) so
the held-out metric is ROUGE on what the model writes, not only the teacher-forced loss. The loss is llmkit's
(`llmkit.losses`): transformers' T5 and BART average it per micro-batch, which is wrong under gradient accumulation.
"""

from __future__ import annotations

from typing import Any

from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase, Seq2SeqTrainer, Seq2SeqTrainingArguments

from llmkit.data.load import load_source, load_splits
from llmkit.data.seq2seq import Encoder
from llmkit.data.sources import Rows
from llmkit.generation import check_generation, configure, generate
from llmkit.job import Job, Prepared, prepare_examples, say
from llmkit.losses import IGNORE, batch_loss
from llmkit.metrics import ExtraMetrics, compute_rouge, evaluate_split, train_and_score
from llmkit.models import Trained
from llmkit.recipe import Recipe

HEADLINE = ("rouge1", "rouge2", "rougeL", "loss")  # printed before and after training


def prepare(job: Job, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """Rows → {input_ids, labels}; shared by `run` and `llmkit inspect-data`."""
    data = job.recipe.data
    train_rows, eval_rows = load_splits(data)
    return prepare_examples(
        train_rows,
        eval_rows,
        Encoder.for_data(tokenizer, data).examples,
        f"(all longer than data.max_length={data.max_length} or data.max_target_length); raise them or set "
        "data.overlong: truncate",
    )


def _args(job: Job, evaluate: bool = False) -> Seq2SeqTrainingArguments:
    return job.training_args(Seq2SeqTrainingArguments, evaluate=evaluate, predict_with_generate=True)


def _trainer(job: Job, model: Any, tokenizer: Any, args: Seq2SeqTrainingArguments, **kwargs: Any) -> Seq2SeqTrainer:
    configure(model, job.recipe.generation, tokenizer)
    return Seq2SeqTrainer(
        model=model,
        args=args,
        # With `model`, the collator builds decoder_input_ids from the labels, which llmkit's loss needs: the labels
        # go to the loss function, not to the model.
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=IGNORE),
        processing_class=tokenizer,
        compute_metrics=compute_rouge(tokenizer, ExtraMetrics(job.recipe.evaluation.extra_metrics)),
        compute_loss_func=batch_loss(label_smoothing=args.label_smoothing_factor),
        **kwargs,
    )


def run(job: Job) -> dict[str, Any]:
    recipe = job.recipe
    check_generation(recipe.generation)
    ExtraMetrics(recipe.evaluation.extra_metrics)  # a metric that cannot load fails here, before the model does
    tokenizer = job.tokenizer()
    prepared = prepare(job, tokenizer)
    test = _test_examples(job, tokenizer)

    args = _args(job, evaluate=bool(prepared.held_out))
    job.plan_steps(len(prepared.train), args)
    trainer = _trainer(
        job,
        job.model(tokenizer),
        tokenizer,
        args,
        train_dataset=prepared.train,
        eval_dataset=prepared.held_out or None,
        callbacks=job.callbacks,
    )
    metrics = train_and_score(job, trainer, test, HEADLINE)
    job.save(trainer.model, tokenizer)
    return metrics


def _test_examples(job: Job, tokenizer: Any) -> list[dict[str, Any]] | None:
    data = job.recipe.data
    if data.test is None:
        return None
    rows = load_source(data.test, data)
    examples, _, stats = Encoder.for_data(tokenizer, data).examples(rows)
    say(f"test: {stats.summary(rows.name)}")
    job.fingerprints["test"] = rows.describe()
    return examples


# ---------------------------------------------------------------- llmkit eval / llmkit predict


def evaluate(job: Job, trained: Trained, rows: Rows, prefix: str) -> dict[str, float]:
    """ROUGE of the trained model's generations, and its loss, on `rows` (`llmkit eval`)."""
    examples, _, stats = Encoder.for_data(trained.tokenizer, job.recipe.data).examples(rows)
    say(f"{prefix}: {stats.summary(rows.name)}")
    return evaluate_split(_trainer(job, trained.model, trained.tokenizer, _args(job)), examples, prefix)


def predict(recipe: Recipe, trained: Trained, rows: list[dict[str, Any]], origins: list[str]) -> list[dict[str, Any]]:
    """The generated target for each source (`llmkit predict`, `llmkit generate`)."""
    configure(trained.model, recipe.generation, trained.tokenizer)
    enc = Encoder.for_data(trained.tokenizer, recipe.data)
    prompts = [enc.source_ids(row, truncate=True) for row in rows]
    return [{"generation": text} for text in generate(trained.model, trained.tokenizer, prompts, len(prompts))]
