"""Sequence classification: a text, or a pair of texts, → one of N labels, on BERT-style encoders and on decoders.

`AutoModelForSequenceClassification` pools [CLS] on encoders and the last non-pad token on decoders (GPT-2, Llama),
which is why `models.load_model` makes the model's pad id the tokenizer's. Trains on transformers' `Trainer` with
llmkit's loss (`llmkit.losses`: right under gradient accumulation, optionally class-weighted) and scikit-learn
metrics at every evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, Trainer

from llmkit.console import say
from llmkit.data.cache import key_for
from llmkit.data.classification import Encoder, check_known, label_names, oversampled
from llmkit.data.prepared import Prepared, prepare_splits
from llmkit.data.sources import Rows
from llmkit.data.splits import Split
from llmkit.data.table import values
from llmkit.data.tokens import LengthPolicy, TokenStats
from llmkit.fit import fit
from llmkit.heldout import examples as per_example
from llmkit.heldout import weigh_eval_loss
from llmkit.losses import batch_loss
from llmkit.metrics import ExtraMetrics, compute_classification, evaluate_split
from llmkit.models import Trained
from llmkit.recipe import Recipe
from llmkit.run import RunEnv, TaskResult, build_model, total_steps, training_args

HEADLINE = ("accuracy", "f1_macro", "mcc", "loss")  # printed before and after training
UNSEEN = "never appears in the training data, so the classifier cannot predict it"

Encode = Callable[[Rows, Mapping[str, int]], tuple[list[dict[str, Any]], list[str], TokenStats]]


def encoder(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, overlong: str | None = None) -> Encoder:
    data = recipe.data
    policy = LengthPolicy(data.max_length, overlong or data.overlong)
    return Encoder(tokenizer, data.format == "sentence-pair", policy)


def prepare_labelled(
    env: RunEnv, tokenizer: PreTrainedTokenizerBase, encode: Encode | None = None, teacher: Any = None
) -> tuple[Prepared, list[str]]:
    """Training, held-out and test examples, and the label names in id order (from the recipe or the training
    data). `encode(rows, label_ids)` replaces the recipe's encoder (distillation adds the inputs of a `teacher`
    tokenizer)."""
    data = env.recipe.data
    encode = encode or encoder(env.recipe, tokenizer).examples

    def setup(splits: dict[str, Split]) -> tuple[dict[str, Any], Any]:
        names = label_names(splits["train"], env.recipe.classification)
        for split in ("validation", "test"):
            if split in splits:
                check_known(splits[split], names, UNSEEN)
        ids = {name: i for i, name in enumerate(names)}
        return {"labels": names}, lambda rows: encode(rows, ids)

    prepared = prepare_splits(
        data,
        None,
        f"(all longer than data.max_length={data.max_length}); raise max_length or set data.overlong: truncate",
        key=key_for(env.recipe, tokenizer, *([teacher] if teacher is not None else []), head=env.head),
        test=True,
        setup=setup,
    )
    names = prepared.facts["labels"]
    say(f"training examples per label: {_counts(labels_of(prepared.train), names)}")
    return prepared, names


def prepare(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    return prepare_labelled(env, tokenizer)[0]


def labels_of(examples: Any) -> np.ndarray:
    """The label ids of a Dataset's (or a list's) examples."""
    if hasattr(examples, "column_names"):
        return np.asarray(values(examples, "labels"), dtype=np.int64)
    return np.asarray([int(ex["labels"]) for ex in examples], dtype=np.int64)


def _counts(labels: np.ndarray, names: list[str]) -> str:
    counts = np.bincount(labels, minlength=len(names))
    return ", ".join(f"{name} {n}" for name, n in zip(names, counts, strict=True))


def label_kwargs(names: list[str]) -> dict[str, Any]:
    """What from_pretrained needs for a head over `names` (saved in the model config, so predictions read as names)."""
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def _trainer(model: Any, tokenizer: Any, extra: ExtraMetrics, **kwargs: Any) -> Trainer:
    trainer = Trainer(
        model=model,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_classification(extra),
        **kwargs,
    )
    return weigh_eval_loss(trainer, per_example)


def run(env: RunEnv) -> TaskResult:
    recipe = env.recipe
    section = recipe.classification
    tokenizer = env.tokenizer()
    prepared, names = prepare_labelled(env, tokenizer)
    extra = ExtraMetrics.of(env)

    train, class_weights = prepared.train, None
    if section.balance == "oversample":
        seed = recipe.training.seed if recipe.training.seed is not None else 42
        train = train.select(oversampled(labels_of(train), seed))
        say(f"oversampled the training set to {_counts(labels_of(train), names)}")
    elif section.balance == "class_weights":
        from sklearn.utils.class_weight import compute_class_weight

        labels = labels_of(train)
        class_weights = compute_class_weight("balanced", classes=np.arange(len(names)), y=labels).tolist()
        say("class weights: " + ", ".join(f"{n} {w:.3g}" for n, w in zip(names, class_weights, strict=True)))

    args = training_args(env, evaluate=bool(prepared.held_out))
    built = build_model(env, tokenizer, total_steps=total_steps(len(train), args), **label_kwargs(names))
    trainer = _trainer(
        built.model,
        tokenizer,
        extra,
        args=args,
        train_dataset=train,
        eval_dataset=prepared.held_out or None,
        compute_loss_func=batch_loss(class_weights, args.label_smoothing_factor),
    )
    metrics = fit(trainer, env, built, test=prepared.test, headline_keys=HEADLINE)
    return TaskResult(metrics, built, tokenizer, data=prepared.sources)


# ---------------------------------------------------------------- llmkit eval / llmkit predict


def trained_labels(trained: Trained) -> list[str]:
    id2label = trained.model.config.id2label
    return [id2label[i] for i in range(len(id2label))]


def evaluate(env: RunEnv, trained: Trained, rows: Rows, prefix: str) -> dict[str, float]:
    """The task's metrics on `rows` for a trained model (`llmkit eval`)."""
    names = trained_labels(trained)
    check_known(rows, names, "is not one the checkpoint was trained on")
    examples, _, stats = encoder(env.recipe, trained.tokenizer).examples(rows, {n: i for i, n in enumerate(names)})
    say(f"{prefix}: {stats.summary(rows.name)}")
    extra = ExtraMetrics.of(env)
    args = training_args(env)
    trainer = _trainer(trained.model, trained.tokenizer, extra, args=args, compute_loss_func=batch_loss())
    return evaluate_split(trainer, examples, prefix)


@torch.no_grad()
def predict(recipe: Recipe, trained: Trained, rows: list[dict[str, Any]], origins: list[str]) -> list[dict[str, Any]]:
    """The most likely label of each row and the probability of every label (`llmkit predict`)."""
    names = trained_labels(trained)
    enc = encoder(recipe, trained.tokenizer, overlong="truncate")  # a prediction is never dropped
    stats = TokenStats()
    features = [enc.encode(row, origin, stats) for row, origin in zip(rows, origins, strict=True)]
    batch = DataCollatorWithPadding(trained.tokenizer)(features)
    batch = {k: v.to(trained.model.device) for k, v in batch.items()}
    probabilities = trained.model(**batch).logits.float().softmax(-1).cpu().tolist()
    return [
        {"prediction": names[p.index(max(p))], "probabilities": {n: round(q, 6) for n, q in zip(names, p, strict=True)}}
        for p in probabilities
    ]
