"""The recipe: one YAML file, validated up front by a strict schema, before any model or dataset loads.

Every problem is reported at once, one sentence each, with the recipe line it came from. This package must not
import torch: `llmkit validate` runs on a laptop without the training stack loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from llmkit.errors import RecipeError, did_you_mean
from llmkit.families import ModelRef, family_of, resolve_model
from llmkit.methods import METHODS, MethodBlock
from llmkit.recipe import loading, wording
from llmkit.recipe.distill import DistillSection
from llmkit.recipe.formats import PAIR_FORMATS
from llmkit.recipe.rl import GrpoSection, RewardSection, RlooSection
from llmkit.recipe.sections import DataSection, ModelSection, Section
from llmkit.recipe.task_sections import ClassificationSection, EvaluationSection, GenerationSection
from llmkit.recipe.tasks import METRIC_TASKS, TASKS, formats_for_task, tasks_using
from llmkit.recipe.training import TrainingSection, training_key_problems
from llmkit.recipe.trl import TRL_SECTIONS, DpoSection, KtoSection, OrpoSection

# Sections of TRL config keys, each checked against its TRL config class by name.
TRL_KEYED = {**TRL_SECTIONS, "reward": RewardSection, "grpo": GrpoSection, "rloo": RlooSection}

# Optional sections that only some tasks use; a task lists the ones it uses in TaskSpec.sections.
TASK_SECTIONS: dict[str, type[Section] | type[Any]] = {
    "classification": ClassificationSection,
    "generation": GenerationSection,
    "evaluation": EvaluationSection,
    **TRL_KEYED,
    "distill": DistillSection,
}


class _FromPython(type(Section)):  # type: ignore[misc]
    """`Recipe(model=..., data=..., method=..., training=...)` from Python is validated exactly as a YAML file is
    (`Recipe.from_dict`): shorthands, every problem at once in one RecipeError, the model checks. Pydantic itself
    builds instances without calling the class, so validation never comes back here."""

    def __call__(cls, **fields: Any) -> Any:
        return cls.from_dict(fields)


class Recipe(Section, metaclass=_FromPython):
    """A whole fine-tuning run. Build one from YAML with `Recipe.from_yaml`, or directly in Python."""

    task: str = Field("sft", description="what to train: " + ", ".join(TASKS))
    model: ModelSection
    data: DataSection = Field(default_factory=DataSection)
    method: MethodBlock = Field(default_factory=lambda: METHODS["full"](), description="how to fine-tune")
    training: TrainingSection = Field(default_factory=TrainingSection)
    output_dir: str = Field(description="where the run writes its model, metrics and manifest")
    dpo: DpoSection | None = Field(None, description="task dpo: trl DPOConfig keys (beta, loss_type, ...)")
    orpo: OrpoSection | None = Field(None, description="task orpo: trl ORPOConfig keys (beta)")
    kto: KtoSection | None = Field(None, description="task kto: trl KTOConfig keys (beta, desirable_weight, ...)")
    reward: RewardSection | None = Field(None, description="task reward: trl RewardConfig keys")
    grpo: GrpoSection | None = Field(None, description="task grpo: the rewards, and trl GRPOConfig keys")
    rloo: RlooSection | None = Field(None, description="task rloo: the rewards, and trl RLOOConfig keys")
    distill: DistillSection | None = Field(None, description="task distill: teacher, alpha, temperature, ...")
    classification: ClassificationSection | None = Field(None, description="task classification: labels, balance")
    generation: GenerationSection | None = Field(None, description="tasks seq2seq and sft: decoding settings")
    evaluation: EvaluationSection | None = Field(
        None, description="extra metrics (classification, seq2seq) and lm-eval benchmarks after training (decoders)"
    )

    @field_validator(*TASK_SECTIONS)
    @classmethod
    def _section_fits_task(cls, value: Any, info: ValidationInfo) -> Any:
        task = info.data.get("task")
        users = tasks_using(info.field_name)
        if value is not None and task in TASKS and task not in users:
            named = users[0] if len(users) == 1 else f"{', '.join(users[:-1])} or {users[-1]}"
            raise ValueError(f"this section applies to task {named}, not '{task}'; remove it")
        return value

    @model_validator(mode="after")
    def _task_section_defaults(self) -> Recipe:
        """A task's sections exist even when the recipe leaves them out, so runners read defaults, not None."""
        for name in TASKS[self.task].sections:
            if getattr(self, name) is None:
                setattr(self, name, TASK_SECTIONS[name]())
        return self

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(f"unknown task '{value}'{did_you_mean(value, TASKS)}; choose one of {', '.join(TASKS)}")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        return loading.method_dict(value)

    @model_validator(mode="after")
    def _task_rules(self) -> Recipe:
        """The rules between the task and the rest of the recipe, then the task's own (its TaskSpec.check)."""
        spec = TASKS[self.task]
        if self.data.format not in spec.formats:
            raise ValueError(
                f"data.format '{self.data.format}' does not fit task '{self.task}'; "
                f"use one of {', '.join(formats_for_task(self.task))}"
            )
        if self.data.packing and not spec.packs:
            raise ValueError(f"data.packing: task {self.task} does not pack examples; remove data.packing")
        if self.data.streaming and not spec.streams:
            raise ValueError(
                f"data.streaming: task {self.task} needs its whole dataset before training starts; remove "
                "data.streaming (preparation is cached, so a second run loads it in seconds)"
            )
        if self.data.streaming and not (self.training.max_steps and self.training.max_steps > 0):
            raise ValueError(
                "data.streaming: a stream's length is unknown, so training cannot count epochs; set training.max_steps"
            )
        if self.data.identical_pairs != "error" and self.data.format not in PAIR_FORMATS:
            raise ValueError(
                "data.identical_pairs applies to preference data only (format preference or alpaca_preference)"
            )
        problems = spec.check(self) if spec.check else []
        problems += self.evaluation_problems(None)
        if problems:
            raise ValueError(problems[0])
        return self

    def evaluation_problems(self, family: str | None) -> list[str]:
        """Extra metrics need a task that computes metrics; benchmarks need a language model (a causal LM head)."""
        section = self.evaluation
        if section is None:
            return []
        if section.extra_metrics and self.task not in METRIC_TASKS:
            return [
                f"evaluation.extra_metrics: task {self.task} reports a held-out loss only, which `evaluate` metrics "
                f"cannot add to; remove extra_metrics (tasks {', '.join(METRIC_TASKS)} take them)"
            ]
        if section.benchmarks and (head := self.head(family)) != "causal_lm":
            return [
                f"evaluation.benchmarks: task {self.task} here trains a {head} model, and the harness scores language "
                "models by next-token likelihood; remove benchmarks (sft, dpo, orpo, kto, grpo, rloo and decoder "
                "distillation take them)"
            ]
        return []

    # ------------------------------------------------------------------ loading

    def replace(self, **changes: Any) -> Recipe:
        """A new recipe with dotted keys changed, validated again like the YAML path:
        `recipe.replace(**{"training.max_steps": 10}, output_dir="out/b")` (Python values, not YAML text)."""
        data = loading.normalise(self.model_dump(mode="json", exclude_unset=True))
        touched = {loading.set_value(data, tuple(key.split(".")), value, key) for key, value in changes.items()}
        recipe = type(self)._validate(data, None, {}, touched)
        problems = recipe.compatibility_problems()
        if problems:
            raise RecipeError(problems)
        return recipe

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], overrides: list[str] | None = None) -> Recipe:
        """Load, apply dotted `key.path=value` overrides, validate; raises RecipeError listing every problem."""
        path = Path(path)
        if path.is_dir():
            raise RecipeError(f"recipe file '{path}' is a directory; name the .yaml file inside it.")
        if not path.is_file():
            raise RecipeError(f"recipe file '{path}' does not exist.")
        data, lines = loading.load_yaml(path)
        return cls.from_dict(data, overrides, source=str(path), lines=lines)

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        overrides: list[str] | None = None,
        source: str | None = None,
        lines: dict[tuple[str, ...], int] | None = None,
    ) -> Recipe:
        data = loading.normalise(data)
        touched = {loading.apply_override(data, item, source) for item in overrides or []}
        recipe = cls._validate(data, source, lines or {}, touched)
        problems = recipe.compatibility_problems()
        if problems:
            raise RecipeError(problems, source)
        return recipe

    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike[str],
        overrides: list[str] | None = None,
        trained_in: str | os.PathLike[str] | None = None,
    ) -> Recipe:
        """The resolved recipe a finished run saved, read for its settings (prompt template, generation); its data
        files and base model need not be reachable from here, so they are not checked. Its relative data paths are
        read from `trained_in`, the directory the run was trained in, so `llmkit eval RUN` works from anywhere;
        `overrides` (`data.test=new.jsonl`) apply after, relative to the current directory."""
        path = Path(run_dir) / "recipe.yaml"
        if not path.is_file():
            raise RecipeError(f"'{run_dir}' is not a finished llmkit run (it has no recipe.yaml).")
        data, lines = loading.load_yaml(path)
        data = loading.normalise(data)
        if trained_in is not None:
            loading.anchor_data_paths(data, Path(trained_in))
        touched = {loading.apply_override(data, item, str(path)) for item in overrides or []}
        return cls._validate(data, str(path), lines, touched, saved_run=True)

    def with_data(self, data: dict[str, Any]) -> Recipe:
        """This recipe with the data section `data`, validated again; its sources may hold in-memory rows
        (`DataSource.held`, from `llmkit.Trainer(recipe, train=...)`)."""
        fields = {name: getattr(self, name) for name in type(self).model_fields} | {"data": data}
        return type(self)._validate(fields, None, {}, set(), in_memory=True)

    @classmethod
    def _validate(
        cls,
        data: dict[str, Any],
        source: str | None,
        lines: dict,
        touched: set,
        saved_run: bool = False,
        in_memory: bool = False,
    ) -> Recipe:
        try:
            return cls.model_validate(data, context={"saved_run": saved_run, "in_memory": in_memory})
        except ValidationError as exc:
            raise RecipeError(cls._problems(exc, data, source, lines, touched), source) from None

    @classmethod
    def _problems(
        cls, exc: ValidationError, data: dict[str, Any], source: str | None, lines: dict, touched: set
    ) -> list[str]:
        key_checks = {"training": training_key_problems}
        key_checks.update({name: section.key_problems for name, section in TRL_KEYED.items()})
        return wording.explain(
            exc,
            data,
            root=cls,
            methods=METHODS,
            key_checks=key_checks,
            source=source,
            lines=lines,
            touched=touched,
        )

    # ------------------------------------------------------------------ cross-checks needing the model

    def model_ref(self) -> ModelRef:
        return resolve_model(self.model.name, self.model.gguf_file, self.model.revision)

    def compatibility_problems(self, ref: ModelRef | None = None) -> list[str]:
        """Task ↔ family and method ↔ family/task checks. Run at validate time when the family can be read from
        disk, and again at train time once the model's config is known (e.g. a hub model that was not cached)."""
        try:
            ref = ref or self.model_ref()
        except RecipeError as exc:
            return exc.problems
        family = None
        if ref.model_type is not None:
            try:
                family = family_of(ref.model_type)
            except RecipeError as exc:
                return exc.problems
        problems = []
        spec = TASKS[self.task]
        if family is not None and family not in spec.families:
            problems.append(
                f"task: '{self.task}' cannot run on a {family} model ({ref.model_type}); "
                f"it needs one of {', '.join(spec.families)}."
            )
        problems += self.method.problems(family, self.task, ref.model_type)
        if spec.check_family:
            problems += spec.check_family(self, family, ref.model_type)
        if family is not None:
            problems += self.evaluation_problems(family)
        return list(dict.fromkeys(problems))

    def head(self, family: str | None) -> str:
        """The head the task trains on a model of `family` (`AutoModelFor…`: causal_lm, seq_cls or seq2seq_lm)."""
        return TASKS[self.task].model_head(self, family)

    def to_yaml(self) -> str:
        """The resolved recipe, every default filled in; what the run actually used."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)
