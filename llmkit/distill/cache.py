"""Teacher logits computed once and kept on disk, so a dataset reused across runs never runs the teacher again.

Only the scored positions are stored (answer tokens of a causal LM, one row per example for a classifier), in
float32, so a cached run trains on exactly the logits a live teacher would give. The file is keyed by the teacher's
files and the tokenised data: a different teacher, data, template or max_length is a different file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from llmkit.console import say
from llmkit.distill.loss import scored_positions
from llmkit.models import cache_dir


def cache_key(teacher_fingerprint: str, examples: Sequence[dict[str, Any]], causal: bool) -> str:
    digest = hashlib.sha256(f"{teacher_fingerprint}|causal={causal}".encode())
    for example in examples:
        for name in ("input_ids", "labels"):
            digest.update(np.asarray(example[name], dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()[:24]


def teacher_logits(
    examples: Sequence[dict[str, Any]],
    key: str,
    load: Callable[[], Any],
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    causal: bool,
    batch_size: int,
    store: bool = True,
) -> list[np.ndarray]:
    """Per example, the teacher's logits at its scored positions; read from the cache, or computed (loading the
    teacher with `load`) and written there first. `store=False` computes them without touching the cache."""
    path = cache_dir() / "teacher-logits" / f"{key}.safetensors"
    if store and path.is_file():
        stored = load_file(path)
        say(f"teacher logits: read from cache {path}")
        return np.split(stored["logits"], stored["offsets"][1:-1])
    teacher = load()
    device = next(teacher.parameters()).device
    per_example: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(list(examples[start : start + batch_size]))
            labels = batch.pop("labels")
            logits = teacher(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
            for row in range(len(labels)):
                one = logits[row : row + 1]
                per_example.append(scored_positions(one, one, labels[row : row + 1], causal)[1].numpy())
    if not store:
        return per_example
    offsets = np.cumsum([0] + [len(x) for x in per_example]).astype(np.int64)
    flat = np.concatenate(per_example) if per_example else np.zeros((0, 0), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.partial-{os.getpid()}")
    save_file({"logits": flat, "offsets": offsets}, str(staging))
    os.replace(staging, path)
    say(f"teacher logits: {flat.nbytes / 2**20:.1f} MiB for {len(per_example)} examples, cached in {path}")
    return per_example
