"""Supervised fine-tuning of a decoder: prompt tokens masked, response and EOS trained.

Runs on transformers' `Trainer` with llmkit's own tokenisation and collator rather than TRL's `SFTTrainer`, which
computes entropy and token accuracy over the full vocabulary every step (bench/README.md has the measured cost); the
label mask is built — and tested — here either way. The loss goes through the LM head in chunks (`llmkit.chunked`).
"""

from __future__ import annotations

import math
from collections.abc import Sized
from typing import Any

from transformers import PreTrainedTokenizerBase, Trainer

from llmkit import chunked
from llmkit.console import say
from llmkit.data.cache import key_for
from llmkit.data.collate import Collator
from llmkit.data.prepared import Prepared, packed, prepare_splits
from llmkit.data.sft import build_examples, check_stoppable, prompt_ids
from llmkit.data.sources import Rows
from llmkit.data.stream import prepare_stream
from llmkit.data.tokens import LengthPolicy
from llmkit.fit import fit
from llmkit.generation import configure, generate
from llmkit.heldout import predicted_tokens, weigh_eval_loss
from llmkit.metrics import evaluate_split
from llmkit.models import Trained, stop_token_ids
from llmkit.recipe import Recipe
from llmkit.run import RunEnv, TaskResult, build_model, total_steps, training_args


def text_options(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """How the recipe's rows become examples (format, template, system prompt, lengths, stop tokens)."""
    data = env.recipe.data
    return dict(
        fmt=data.format,
        tokenizer=tokenizer,
        template=data.template,
        system_prompt=data.system_prompt,
        policy=LengthPolicy.of(data),
        stop_ids=stop_token_ids(env.base, tokenizer),
    )


def encoder(env: RunEnv, tokenizer: PreTrainedTokenizerBase, check: bool = True) -> Any:
    """rows → (examples, where, stats); `check=False` leaves the stop-token check to the caller (one batch of a
    split is not the whole split)."""
    options = text_options(env, tokenizer)
    return lambda rows: build_examples(rows.rows, rows.where, **options, check=check)


def prepare(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """Rows → tokenised examples with prompt tokens masked; cached, or streamed with data.streaming."""
    data = env.recipe.data
    stop_ids = text_options(env, tokenizer)["stop_ids"]

    def stoppable(stats: Any) -> None:
        check_stoppable(stats, data.format, tokenizer, stop_ids)

    if data.streaming:
        return prepare_stream(data, encoder(env, tokenizer, check=False), finish=stoppable)
    return prepare_splits(
        data,
        encoder(env, tokenizer, check=False),
        f"after tokenising (all longer than data.max_length={data.max_length} or without a trainable token); "
        "raise max_length or set data.overlong: truncate",
        key=key_for(env.recipe, tokenizer, stop_ids=sorted(stop_ids), head=env.head),
        finish=stoppable,
    )


def run(env: RunEnv) -> TaskResult:
    data = env.recipe.data
    tokenizer = env.tokenizer()
    prepared = prepare(env, tokenizer)
    train, held_out = prepared.train, prepared.held_out
    if data.packing:
        train, held_out = packed(prepared, data.max_length, data.num_proc)

    args = training_args(env, evaluate=bool(held_out))
    n_train = len(train) if isinstance(train, Sized) else 0  # a stream has no length; the recipe sets max_steps
    built = build_model(env, tokenizer, total_steps=total_steps(n_train, args))
    trainer = _trainer(env, built.model, tokenizer, args, train_dataset=train, eval_dataset=held_out or None)
    metrics = fit(trainer, env, built)
    return TaskResult(metrics, built, tokenizer, data=prepared.sources)


def _trainer(env: RunEnv, model: Any, tokenizer: PreTrainedTokenizerBase, args: Any, **kwargs: Any) -> Trainer:
    trainer = Trainer(
        model=model, args=args, data_collator=Collator(tokenizer.pad_token_id), processing_class=tokenizer, **kwargs
    )
    if chunked.enabled(trainer, model, env.recipe.training.chunked_loss):
        chunked.attach(trainer, model, causal=True)
    return weigh_eval_loss(trainer, predicted_tokens)


# ---------------------------------------------------------------- llmkit eval / llmkit predict / llmkit generate


def evaluate(env: RunEnv, trained: Trained, rows: Rows, prefix: str) -> dict[str, float]:
    """Loss (response tokens only, as in training) and perplexity on `rows` (`llmkit eval`)."""
    examples, _, stats = build_examples(rows.rows, rows.where, **text_options(env, trained.tokenizer))
    say(f"{prefix}: {stats.summary(rows.name)}")
    trainer = _trainer(env, trained.model, trained.tokenizer, training_args(env))
    metrics = evaluate_split(trainer, examples, prefix)
    metrics[f"{prefix}_perplexity"] = math.exp(metrics[f"{prefix}_loss"])
    return metrics


def predict(recipe: Recipe, trained: Trained, rows: list[dict[str, Any]], origins: list[str]) -> list[dict[str, Any]]:
    """The model's response to each row's prompt, rendered with the template the run was trained with."""
    data, tokenizer = recipe.data, trained.tokenizer
    options = dict(fmt=data.format, tokenizer=tokenizer, template=data.template, system_prompt=data.system_prompt)
    prompts = prompt_ids(rows, **options)
    configure(trained.model, recipe.generation, tokenizer)
    return [{"generation": text} for text in generate(trained.model, tokenizer, prompts, len(prompts))]
