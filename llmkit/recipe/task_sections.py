"""The small recipe sections some tasks read: classification, generation, evaluation (each task lists the ones it
uses in its TaskSpec.sections). Torch-free: `llmkit validate` never imports torch.

Each field's description is its documentation: `llmkit explain` and docs/recipe.md render it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from llmkit.extras import missing
from llmkit.recipe.benchmarks import problems
from llmkit.recipe.sections import Section


class ClassificationSection(Section):
    """task: classification — which labels the head predicts, and what to do about imbalanced classes."""

    labels: list[str] | None = Field(
        None, description="label names in id order; default: every label in the training data, sorted"
    )
    num_labels: int | None = Field(None, ge=2, description="how many labels to expect; checked against the data")
    balance: Literal["none", "class_weights", "oversample"] = Field(
        "none",
        description="imbalanced classes: 'class_weights' weighs the loss by inverse class frequency (sklearn's "
        "'balanced'); 'oversample' repeats rarer classes' training rows until every class is as frequent as the "
        "largest",
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _label_strings(cls, value: Any) -> Any:
        """Labels in data files are often numbers; they are names here, as in the model config's id2label."""
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClassificationSection:
        if self.labels is not None:
            if len(self.labels) < 2:
                raise ValueError("labels needs at least two names; a classifier chooses between labels")
            repeated = sorted({x for x in self.labels if self.labels.count(x) > 1})
            if repeated:
                raise ValueError(f"labels lists {repeated[0]!r} more than once; each label gets one id")
            if self.num_labels is not None and self.num_labels != len(self.labels):
                raise ValueError(
                    f"num_labels is {self.num_labels} but labels lists {len(self.labels)} names; "
                    "make them agree (or drop num_labels)"
                )
        return self


class GenerationSection(Section):
    """Decoding for generation-based evaluation (seq2seq), `llmkit predict` and `llmkit generate`; these become a
    transformers GenerationConfig on the trained model."""

    max_new_tokens: int = Field(128, gt=0, description="tokens to generate at most")
    num_beams: int = Field(1, gt=0, description="beam search width; 1 is greedy (or sampling)")
    do_sample: bool = Field(False, description="sample instead of picking the most likely token")
    temperature: float | None = Field(None, gt=0, description="with do_sample: sharpen (<1) or flatten (>1)")
    top_p: float | None = Field(None, gt=0, le=1, description="with do_sample: nucleus sampling")
    top_k: int | None = Field(None, gt=0, description="with do_sample: sample among the k most likely tokens")
    repetition_penalty: float | None = Field(None, gt=0)
    no_repeat_ngram_size: int | None = Field(None, gt=0)
    length_penalty: float | None = Field(None, description="with num_beams > 1: >0 favours longer outputs")

    @model_validator(mode="after")
    def _sampling(self) -> GenerationSection:
        for key in ("temperature", "top_p", "top_k"):
            if getattr(self, key) is not None and not self.do_sample:
                raise ValueError(f"{key} only applies when sampling; set do_sample: true or remove {key}")
        if self.length_penalty is not None and self.num_beams == 1:
            raise ValueError("length_penalty only applies to beam search; set num_beams above 1 or remove it")
        return self

    def kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class EvaluationSection(Section):
    """Extra metrics for users who are online (llmkit's own metrics never need the hub), and lm-evaluation-harness
    benchmarks run on the trained model and its base after training."""

    extra_metrics: list[str] = Field(
        default_factory=list,
        description="tasks classification, seq2seq, distill: Hugging Face `evaluate` metrics to add, by hub name "
        "(needs the hub) or local script path",
    )
    benchmarks: list[str] = Field(
        default_factory=list,
        description="decoders: lm-evaluation-harness tasks run on the trained model and its base after training, "
        "as `llmkit benchmark RUN --tasks ... --baseline` would (NAME or NAME:N-SHOT, a local task file, or "
        "open-llm-leaderboard); needs pip install 'llmkit[eval]'",
    )
    benchmark_limit: float | None = Field(
        None, gt=0, description="examples per benchmark task (a fraction if below 1): for quick checks, not figures"
    )

    @field_validator("benchmarks")
    @classmethod
    def _benchmarks(cls, value: list[str]) -> list[str]:
        found = problems(value, key="") if value else []
        if found:
            raise ValueError(found[0].removeprefix(": "))
        if value and (problem := missing("lm_eval")):
            raise ValueError(problem)
        return value
