"""Seq2seq: an encoder-decoder (T5, BART) learns to write a target from a source — summaries, translations.

Runs on transformers' `Seq2SeqTrainer`, which generates at every evaluation (the recipe's `generation` settings) so
the held-out metric is ROUGE on what the model writes, not only the teacher-forced loss. The loss is llmkit's
(`llmkit.losses`): transformers' T5 and BART average it per micro-batch, which is wrong under gradient accumulation.
"""

from __future__ import annotations

from typing import Any

from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase, Seq2SeqTrainer, Seq2SeqTrainingArguments

from llmkit import chunked
from llmkit.console import say
from llmkit.data.cache import key_for
from llmkit.data.prepared import Prepared, prepare_splits
from llmkit.data.seq2seq import Encoder
from llmkit.data.sources import Rows
from llmkit.data.tokens import IGNORE_INDEX
from llmkit.fit import fit
from llmkit.generation import check_generation, configure, generate
from llmkit.heldout import target_tokens, weigh_eval_loss
from llmkit.losses import batch_loss
from llmkit.metrics import ExtraMetrics, compute_rouge, evaluate_split
from llmkit.models import Trained
from llmkit.recipe import Recipe
from llmkit.run import RunEnv, TaskResult, build_model, total_steps, training_args

HEADLINE = ("rouge1", "rouge2", "rougeL", "loss")  # printed before and after training


def prepare(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """Rows → {input_ids, labels} for the training, held-out and test splits."""
    data = env.recipe.data
    return prepare_splits(
        data,
        Encoder.for_data(tokenizer, data).examples,
        f"(all longer than data.max_length={data.max_length} or data.max_target_length); raise them or set "
        "data.overlong: truncate",
        key=key_for(env.recipe, tokenizer, head=env.head),
        test=True,
    )


def _args(env: RunEnv, evaluate: bool = False) -> Seq2SeqTrainingArguments:
    return training_args(env, Seq2SeqTrainingArguments, evaluate=evaluate, predict_with_generate=True)


def _trainer(env: RunEnv, model: Any, tokenizer: Any, args: Seq2SeqTrainingArguments, **kwargs: Any) -> Seq2SeqTrainer:
    configure(model, env.recipe.generation, tokenizer)
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        # With `model`, the collator builds decoder_input_ids from the labels, which llmkit's loss needs: the labels
        # go to the loss function, not to the model.
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=IGNORE_INDEX),
        processing_class=tokenizer,
        compute_metrics=compute_rouge(tokenizer, ExtraMetrics.of(env)),
        compute_loss_func=batch_loss(label_smoothing=args.label_smoothing_factor),
        **kwargs,
    )
    if chunked.enabled(trainer, model, env.recipe.training.chunked_loss):  # in training; evaluation generates anyway
        chunked.attach(trainer, model, causal=False, label_smoothing=args.label_smoothing_factor)
    return weigh_eval_loss(trainer, target_tokens)


def run(env: RunEnv) -> TaskResult:
    recipe = env.recipe
    check_generation(recipe.generation)
    ExtraMetrics(recipe.evaluation.extra_metrics)  # a metric that cannot load fails here, before the model does
    tokenizer = env.tokenizer()
    prepared = prepare(env, tokenizer)

    args = _args(env, evaluate=bool(prepared.held_out))
    built = build_model(env, tokenizer, total_steps=total_steps(len(prepared.train), args))
    trainer = _trainer(
        env, built.model, tokenizer, args, train_dataset=prepared.train, eval_dataset=prepared.held_out or None
    )
    metrics = fit(trainer, env, built, test=prepared.test, headline_keys=HEADLINE)
    return TaskResult(metrics, built, tokenizer, data=prepared.sources)


# ---------------------------------------------------------------- llmkit eval / llmkit predict


def evaluate(env: RunEnv, trained: Trained, rows: Rows, prefix: str) -> dict[str, float]:
    """ROUGE of the trained model's generations, and its loss, on `rows` (`llmkit eval`)."""
    examples, _, stats = Encoder.for_data(trained.tokenizer, env.recipe.data).examples(rows)
    say(f"{prefix}: {stats.summary(rows.name)}")
    return evaluate_split(_trainer(env, trained.model, trained.tokenizer, _args(env)), examples, prefix)


def predict(recipe: Recipe, trained: Trained, rows: list[dict[str, Any]], origins: list[str]) -> list[dict[str, Any]]:
    """The generated target for each source (`llmkit predict`, `llmkit generate`)."""
    configure(trained.model, recipe.generation, trained.tokenizer)
    enc = Encoder.for_data(trained.tokenizer, recipe.data)
    prompts = [enc.source_ids(row, truncate=True) for row in rows]
    return [{"generation": text} for text in generate(trained.model, trained.tokenizer, prompts, len(prompts))]
