"""Load the base model and tokenizer a recipe names: the right head for the task, dtype, pad token.

GGUF checkpoints are dequantised once and cached as safetensors, so later loads skip the dequantisation
(docs/design.md has the measured times).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from llmkit import precision
from llmkit.errors import RecipeError, first_line
from llmkit.families import ModelRef, family_of
from llmkit.recipe import ModelSection

HEADS = {
    "causal_lm": transformers.AutoModelForCausalLM,
    "seq_cls": transformers.AutoModelForSequenceClassification,
    "seq2seq_lm": transformers.AutoModelForSeq2SeqLM,
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model's files, resolved to something `from_pretrained` loads directly, and what it is."""

    path: str  # local directory or hub id
    model_type: str
    family: str
    section: ModelSection

    def pretrained_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"trust_remote_code": self.section.trust_remote_code}
        if self.section.revision and not Path(self.path).is_dir():
            kwargs["revision"] = self.section.revision
        return kwargs


def cache_dir() -> Path:
    return Path(os.environ.get("LLMKIT_CACHE", Path.home() / ".cache" / "llmkit"))


def resolve_base(section: ModelSection, ref: ModelRef) -> ResolvedModel:
    """Materialise GGUF to safetensors if needed and read the config, so the family is known before weights load."""
    path = ref.path
    if ref.gguf_file is not None:
        gguf_path = Path(ref.path) / ref.gguf_file
        try:
            path = str(dequantised_gguf(gguf_path, ref))
        except Exception as exc:  # a truncated or foreign file fails deep inside the gguf reader
            reason = f"{type(exc).__name__}: {first_line(exc)}"
            raise RecipeError(f"model.name: cannot read the GGUF file '{gguf_path}' ({reason}).") from None
    model_type = ref.model_type
    if model_type is None:
        try:
            config = AutoConfig.from_pretrained(
                path, **_revision(section, path), trust_remote_code=section.trust_remote_code
            )
        except OSError as exc:
            raise RecipeError(f"model.name: cannot load '{section.name}': {first_line(exc)}") from None
        model_type = config.model_type
    return ResolvedModel(path=path, model_type=model_type, family=family_of(model_type), section=section)


def length_problems(base: ResolvedModel, max_lengths: dict[str, int | None]) -> list[str]:
    """Models with learned absolute positions (BERT-style, GPT-2, BART) have none past their config's limit, and
    torch would fail mid-run with an IndexError; say so before anything loads. Rotary and relative positions
    (Llama, T5, DeBERTa-v3) have no such wall."""
    if base.family not in ("bert", "gpt2") and base.model_type != "bart":
        return []
    try:
        config = AutoConfig.from_pretrained(base.path, **base.pretrained_kwargs())
    except (OSError, ValueError):
        return []  # resolve_base read it already; a model that loads another way is checked by transformers
    if getattr(config, "position_biased_input", True) is False:
        return []
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if limit and config.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # their position ids start after the padding index
    return [
        f"{key}: {value} is more than this {base.model_type} model's {limit} positions; set {key}: {limit} or less."
        for key, value in max_lengths.items()
        if limit and value and value > limit
    ]


def _revision(section: ModelSection, path: str) -> dict[str, Any]:
    return {"revision": section.revision} if section.revision and not Path(path).is_dir() else {}


def dequantised_gguf(gguf_path: Path, ref: ModelRef) -> Path:
    """A safetensors copy of a GGUF checkpoint, made once per file (keyed by path, size and mtime)."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "gguf" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    print(f"llmkit: dequantising {gguf_path.name} to safetensors once (cached in {target})", file=sys.stderr)
    staging = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(ref.path, gguf_file=gguf_path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(ref.path, gguf_file=gguf_path.name)
    # The weights are already dequantised; drop the GGUF marker so they save as ordinary safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(target)
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tokenizer(base: ResolvedModel) -> PreTrainedTokenizerBase:
    """The tokenizer, with a pad token. Padding never decides the labels in llmkit (labels are built per example
    and padded with -100), so reusing EOS as the pad token can never mask the EOS label."""
    source = base.section.tokenizer or base.path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **base.pretrained_kwargs())
    except (OSError, ValueError) as exc:
        raise RecipeError(f"model.tokenizer: cannot load a tokenizer from '{source}': {first_line(exc)}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise RecipeError(f"model: the tokenizer of '{base.section.name}' has neither a pad nor an EOS token.")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def stop_token_ids(base: ResolvedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Tokens that end generation: the tokenizer's EOS plus any the generation config adds (e.g. end-of-turn)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        gen = GenerationConfig.from_pretrained(base.path, **base.pretrained_kwargs())
        extra = gen.eos_token_id
        ids |= set(extra) if isinstance(extra, list) else ({extra} if extra is not None else set())
    except (OSError, ValueError):
        pass
    return ids


def load_model(
    base: ResolvedModel, head: str, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype | None = None, **kwargs: Any
) -> PreTrainedModel:
    """The pretrained weights under the head the task needs, in `dtype` (default: the recipe's `model.dtype`, auto
    resolved for inference) with the recipe's attention (auto: the fastest that works); `kwargs` go to
    from_pretrained (num_labels, ...)."""
    auto = HEADS[head]
    dtype = dtype or precision.weight_dtype(base.section.dtype)
    candidates = precision.attention_candidates(base.section.attn_implementation, dtype)
    model = None
    for attention in candidates[:-1]:
        try:
            model = auto.from_pretrained(
                base.path, dtype=dtype, attn_implementation=attention, **base.pretrained_kwargs(), **kwargs
            )
            break
        except (ValueError, ImportError):  # this model or install cannot run it: the next candidate
            continue
    if model is None:
        try:
            model = auto.from_pretrained(
                base.path, dtype=dtype, attn_implementation=candidates[-1], **base.pretrained_kwargs(), **kwargs
            )
        except OSError as exc:
            raise RecipeError(f"model.name: cannot load '{base.section.name}': {first_line(exc)}") from None
    if model.config.pad_token_id is None or head == "seq_cls":
        # Decoder classifiers pool the last token that is not the config's pad id; if that id differs from the
        # tokenizer's (a base config naming another pad), every padded row would be read at the wrong position.
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts. A bitsandbytes 4-bit weight packs two values per byte of storage, so it
    counts its values, not its bytes (as peft's own count does)."""

    def values(p: torch.nn.Parameter) -> int:
        if type(p).__name__ == "Params4bit":
            return p.numel() * 2 * p.element_size()
        return p.numel()

    trainable = sum(values(p) for p in model.parameters() if p.requires_grad)
    total = sum(values(p) for p in model.parameters())
    return trainable, total


@dataclass
class Trained:
    """A finished run loaded back: the model (base + method weights), its tokenizer, and llmkit.json."""

    model: Any
    tokenizer: PreTrainedTokenizerBase
    info: dict[str, Any]


def load_trained(
    run_dir: str | os.PathLike[str],
    head_kwargs: dict[str, Any] | None = None,
    weights: str | os.PathLike[str] | None = None,
    merged: bool = False,
) -> Trained:
    """Reload what `llmkit train` wrote. Adapter runs load their base model again (from the hub, a directory, the
    GGUF cache or a packaged model, as the recipe named it, 4-bit for QLoRA) and put the adapter on it. `weights`: one
    of the run's trainer checkpoints (`<run>/checkpoints/checkpoint-N`) to load instead of the final weights; with
    `merged=True` the method folds its weights into the base instead (`llmkit merge`)."""

    from llmkit.methods import read_run

    run_dir = Path(run_dir)
    info, method = read_run(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    kwargs = {**info.get("head_kwargs", {}), **(head_kwargs or {})}
    if "id2label" in kwargs:  # JSON made the ids strings; transformers keeps whatever keys it is given
        kwargs["id2label"] = {int(i): name for i, name in kwargs["id2label"].items()}
    weights = Path(weights) if weights is not None else run_dir
    if method.saves_full_model:
        model = HEADS[info["head"]].from_pretrained(weights, **kwargs)
    else:
        base, ctx = run_base(info)
        base_model = load_model(base, info["head"], tokenizer, **kwargs, **method.load_kwargs(ctx))
        model = method.merged(base_model, weights) if merged else method.reload(base_model, weights)
    return Trained(model.eval(), tokenizer, info)


def run_base(info: dict[str, Any]) -> tuple[ResolvedModel, Any]:
    """The base model a run (its llmkit.json) was trained from, and the method context it was loaded in."""
    from llmkit.families import resolve_model
    from llmkit.methods import MethodContext

    section = ModelSection(**info["base_model"])
    base = resolve_base(section, resolve_model(section.name, section.gguf_file, section.revision))
    ctx = MethodContext(
        family=info["family"],
        task=info["task"],
        head=info["head"],
        model_type=info["model_type"],
        model_name=section.name,
        model_path=base.path,
    )
    return base, ctx
