"""Task metrics, computed offline: scikit-learn for classification, rouge-score for ROUGE.

`evaluate.load("accuracy")` fetches its script from the hub, so llmkit's own metrics never use it; a recipe may add
`evaluate` metrics by name (`evaluation.extra_metrics`) for users who are online, or by local script path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np

from llmkit.errors import LlmkitError, RecipeError, first_line
from llmkit.extras import missing

# Trainer.evaluate() also reports timings; they describe the machine, not the model.
TIMING_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second", "_model_preparation_time")
NOT_METRICS = ("epoch", "num_input_tokens_seen")  # training state that Trainer adds to evaluation results


def classification_scores(predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
    """Accuracy, macro-averaged F1 / precision / recall (every class counts the same, however rare) and Matthews
    correlation (informative even when one class dominates)."""
    from sklearn.metrics import accuracy_score, matthews_corrcoef, precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        references, predictions, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(references, predictions)),
        "f1_macro": float(f1),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "mcc": float(matthews_corrcoef(references, predictions)),
    }


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures (0–1), with Porter stemming as in the original ROUGE script."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return {key: float(np.mean([s[key].fmeasure for s in scores])) if scores else 0.0 for key in scorer.rouge_types}


class ExtraMetrics:
    """The recipe's `evaluation.extra_metrics`, loaded with Hugging Face `evaluate` before any model loads, so a
    metric that cannot be fetched (offline) fails the run at once, with the reason; and the `compute_metrics`
    function given to `llmkit.Trainer`, called the same way: `(predictions, references) -> {name: number}`."""

    def __init__(self, names: Sequence[str], own: Callable[[Any, Any], dict[str, Any]] | None = None):
        self.modules = [(name, _load_metric(name)) for name in names]
        self.own = own

    @classmethod
    def of(cls, env: Any) -> ExtraMetrics:
        """A run's extra metrics: its recipe's and its Python `compute_metrics` (an `llmkit.run.RunEnv`)."""
        return cls(env.recipe.evaluation.extra_metrics, env.compute_metrics)

    def scores(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for source, module in self.modules:
            try:
                result = module.compute(predictions=list(predictions), references=list(references))
            except Exception as exc:  # a metric that does not fit the task's outputs
                raise LlmkitError(f"evaluation.extra_metrics: '{source}' failed: {first_line(exc)}") from None
            name = module.name  # 'sacrebleu' for a hub metric, the script's name for a local one
            for key, value in (result or {}).items():
                if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                    out[key if key == name else f"{name}_{key}"] = float(value)
        if self.own is not None:
            out.update(_own_scores(self.own, predictions, references))
        return out


def _own_scores(own: Callable[[Any, Any], dict[str, Any]], predictions: Any, references: Any) -> dict[str, float]:
    """The user's `compute_metrics` result: a dict of numbers (a failure keeps its traceback: it is the user's code)."""
    try:
        result = own(predictions, references)
    except Exception as exc:
        raise LlmkitError(f"compute_metrics raised {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(result, dict) or not all(
        isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in result.values()
    ):
        raise LlmkitError(f"compute_metrics must return a dict of metric name → number, not {result!r:.80}")
    return {str(k): float(v) for k, v in result.items()}


@cache
def _load_metric(name: str) -> Any:
    """One `evaluate` module per name and process: a run checks its metrics at start and uses them at each eval."""
    problem = missing("evaluate")
    if problem:
        raise RecipeError(f"{problem}.")
    import evaluate

    try:
        return evaluate.load(name)
    except Exception as exc:  # evaluate raises many types for a metric it cannot fetch or build
        raise RecipeError(
            f"evaluation.extra_metrics: cannot load '{name}' with evaluate ({first_line(exc)}); hub metrics need the "
            "hub (unset HF_HUB_OFFLINE), or give a local metric script path, or remove it."
        ) from None


def measurements(result: dict[str, Any]) -> dict[str, Any]:
    """An evaluation result without its speed figures and training state: the metrics that describe the model."""
    return {k: v for k, v in result.items() if not k.endswith(TIMING_SUFFIXES) and k not in NOT_METRICS}


def evaluate_split(trainer: Any, dataset: Any = None, prefix: str = "eval") -> dict[str, float]:
    """`trainer.evaluate` on a split, reduced to its measurements."""
    return measurements(trainer.evaluate(dataset, metric_key_prefix=prefix))


def compute_classification(extra: ExtraMetrics) -> Callable[[Any], dict[str, float]]:
    """A Trainer `compute_metrics` for classifier logits."""

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.asarray(logits).argmax(-1)
        references = np.asarray(prediction.label_ids)
        return {**classification_scores(predicted, references), **extra.scores(predicted, references)}

    return compute


def compute_rouge(tokenizer: Any, extra: ExtraMetrics) -> Callable[[Any], dict[str, float]]:
    """A Trainer `compute_metrics` for generated token ids (Seq2SeqTrainer with predict_with_generate): ROUGE against
    the reference targets, and the mean generated length in tokens."""

    def compute(prediction: Any) -> dict[str, float]:
        pad = tokenizer.pad_token_id
        generated = np.where(prediction.predictions != -100, prediction.predictions, pad)  # -100: batch padding
        references = np.where(prediction.label_ids != -100, prediction.label_ids, pad)
        texts = [t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True)]
        targets = [t.strip() for t in tokenizer.batch_decode(references, skip_special_tokens=True)]
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        return {**rouge_scores(texts, targets), "gen_len": float(np.mean(lengths)), **extra.scores(texts, targets)}

    return compute


def headline(metrics: dict[str, Any], prefix: str, keys: Sequence[str], suffix: str = "") -> str:
    found = [(k, metrics[f"{prefix}_{k}{suffix}"]) for k in keys if f"{prefix}_{k}{suffix}" in metrics]
    return ", ".join(f"{k} {v:.4f}" for k, v in found)
