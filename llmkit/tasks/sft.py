"""Supervised fine-tuning of a decoder: prompt tokens masked, response and EOS trained.

Runs on transformers' `Trainer` with llmkit's own tokenisation and collator rather than TRL's `SFTTrainer`, which
computes entropy and token accuracy over the full vocabulary every step (bench/README.md has the measured cost); the
label mask is built — and tested — here either way.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PreTrainedTokenizerBase, Trainer

from llmkit.console import say
from llmkit.data.collate import Collator, pack
from llmkit.data.prepared import Prepared, prepare_splits
from llmkit.data.sft import build_examples, prompt_ids
from llmkit.data.sources import Rows
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


def encoder(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Any:
    options = text_options(env, tokenizer)
    return lambda rows: build_examples(rows.rows, rows.where, **options)


def prepare(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """Rows → tokenised examples with prompt tokens masked."""
    data = env.recipe.data
    return prepare_splits(
        data,
        encoder(env, tokenizer),
        f"after tokenising (all longer than data.max_length={data.max_length} or without a trainable token); "
        "raise max_length or set data.overlong: truncate",
    )


def run(env: RunEnv) -> TaskResult:
    data = env.recipe.data
    tokenizer = env.tokenizer()
    prepared = prepare(env, tokenizer)
    train, held_out = prepared.train, prepared.held_out
    if data.packing:
        train = pack(train, data.max_length)
        held_out = pack(held_out, data.max_length) if held_out else held_out
        say(f"packed into {len(train)} rows of up to {data.max_length} tokens")

    args = training_args(env, evaluate=bool(held_out))
    built = build_model(env, tokenizer, total_steps=total_steps(len(train), args))
    trainer = _trainer(built.model, tokenizer, args, train_dataset=train, eval_dataset=held_out or None)
    metrics = fit(trainer, env, built)
    return TaskResult(metrics, built, tokenizer, data=prepared.sources)


def _trainer(model: Any, tokenizer: PreTrainedTokenizerBase, args: Any, **kwargs: Any) -> Trainer:
    trainer = Trainer(
        model=model, args=args, data_collator=Collator(tokenizer.pad_token_id), processing_class=tokenizer, **kwargs
    )
    return weigh_eval_loss(trainer, predicted_tokens)


# ---------------------------------------------------------------- llmkit eval / llmkit predict / llmkit generate


def evaluate(env: RunEnv, trained: Trained, rows: Rows, prefix: str) -> dict[str, float]:
    """Loss (response tokens only, as in training) and perplexity on `rows` (`llmkit eval`)."""
    examples, _, stats = build_examples(rows.rows, rows.where, **text_options(env, trained.tokenizer))
    say(f"{prefix}: {stats.summary(rows.name)}")
    trainer = _trainer(trained.model, trained.tokenizer, training_args(env))
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
