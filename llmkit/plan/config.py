"""A recipe's model config, read without torch and without weights: config.json from a directory or the hub cache,
or the metadata of a GGUF file (a packaged model's too).

The GGUF reader is llmkit's own because `gguf.GGUFReader` maps every tensor and array field into numpy on open
(15 s for SmolLM2-135M's 49,152-token vocabulary on a busy 2-core machine); `llmkit plan` needs a dozen numbers.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from llmkit.errors import RecipeError
from llmkit.families import resolve_model
from llmkit.recipe import ModelSection

# GGUF value types: struct format and size of the scalar ones; 8 is a string, 9 an array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def model_config(section: ModelSection) -> dict[str, Any]:
    """The model's config as a dict of transformers config keys."""
    ref = resolve_model(section.name, section.gguf_file, section.revision)
    if ref.gguf_file is not None:
        return gguf_config(Path(ref.path) / ref.gguf_file)
    path = Path(ref.path) / "config.json"
    if not path.is_file():
        path = _hub_config(section)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecipeError(f"model.name: cannot read '{path}': {exc}.") from None


def _hub_config(section: ModelSection) -> Path:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(section.name, "config.json", revision=section.revision))
    except Exception as exc:  # offline, or not a repo: the first line says which
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(
            f"model.name: llmkit plan needs the config.json of '{section.name}' and cannot get it ({first}); "
            "run once with HF_HUB_OFFLINE=0 to cache it."
        ) from None


def gguf_config(path: Path) -> dict[str, Any]:
    """A transformers-style config from a GGUF file's metadata (llama.cpp's key names, for its architecture)."""
    meta, tensors = read_gguf(path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise RecipeError(f"model.name: '{path}' has no general.architecture, so its layout is unknown.")

    def key(name: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{name}", default)

    heads = key("attention.head_count")
    hidden = key("embedding_length")
    return {
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": key("block_count"),
        "intermediate_size": key("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": key("attention.head_count_kv", heads),
        "head_dim": key("attention.key_length") or key("rope.dimension_count") or (hidden // heads),
        "vocab_size": key("vocab_size") or meta.get("tokenizer.ggml.tokens", 0),
        "max_position_embeddings": key("context_length"),
        "tie_word_embeddings": "output.weight" not in tensors,
    }


def read_gguf(path: Path) -> tuple[dict[str, Any], set[str]]:
    """GGUF metadata (arrays become their length) and tensor names, reading only the file's header."""
    with path.open("rb") as handle:
        magic, version = handle.read(4), _read(handle, "I")
        if magic != b"GGUF" or version < 2:
            raise RecipeError(f"model.name: '{path}' is not a GGUF file this reader knows (version {version}).")
        n_tensors, n_meta = _read(handle, "Q"), _read(handle, "Q")
        meta = {}
        for _ in range(n_meta):
            name = _string(handle)
            meta[name] = _value(handle, _read(handle, "I"))
        tensors = set()
        for _ in range(n_tensors):
            tensors.add(_string(handle))
            dims = _read(handle, "I")
            handle.seek(8 * dims + 4 + 8, 1)  # dims, type, offset
    return meta, tensors


def _read(handle: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    return struct.unpack("<" + fmt, handle.read(size))[0]


def _string(handle: BinaryIO) -> str:
    return handle.read(_read(handle, "Q")).decode("utf-8", errors="replace")


def _value(handle: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _read(handle, _SCALARS[kind])
    if kind == 8:
        return _string(handle)
    if kind == 9:  # an array: its length is what a config needs (a vocabulary's size)
        item, count = _read(handle, "I"), _read(handle, "Q")
        if item in _SCALARS:
            handle.seek(struct.calcsize(_SCALARS[item]) * count, 1)
        else:
            for _ in range(count):
                _value(handle, item)
        return count
    raise RecipeError(f"unknown GGUF value type {kind}")
