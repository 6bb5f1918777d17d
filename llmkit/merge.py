"""`llmkit merge RUN_DIR --output DIR`: fold a finished run's trained weights into its base model and save a plain
transformers model (safetensors) that loads with `from_pretrained` alone: no peft, no bitsandbytes, no llmkit.

LoRA (with DoRA or rsLoRA), AdaLoRA and IA³ merge through peft; QLoRA dequantises its 4-bit base first (exactly the
weights training saw) and merges in full precision; BitFit writes its biases into the base. Prompts, prefixes and
bottleneck adapters add computation instead of changing weights, so those runs cannot merge, and say why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from llmkit.errors import RecipeError
from llmkit.families import declared_dtype
from llmkit.methods import read_run


def merge(
    run_dir: str | os.PathLike[str], output: str | os.PathLike[str], dtype: str | None = None
) -> tuple[Path, str]:
    """Write the merged model of `run_dir` to `output` (atomically: `output.incomplete` until complete), in `dtype`
    (default: the dtype the base model was published in, so a bf16 base is not written at twice its size in
    float32). The merge itself is computed in the precision the run loads in. Returns the directory and the dtype."""
    run_dir, output = Path(run_dir), Path(output)
    info, method = read_run(run_dir)
    block = info["method"]
    if method.saves_full_model:
        raise RecipeError(
            f"'{run_dir}' trained every weight (method {block['name']}), so it already is a complete model; "
            f"load it with from_pretrained('{run_dir}')."
        )
    if not method.mergeable:
        raise RecipeError(
            f"method {block['name']} cannot be merged: {method.merge_note}; "
            f"load the run with llmkit.models.load_trained('{run_dir}') instead."
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise RecipeError(f"--output: '{output}' already exists and is not empty; choose a new directory.")

    from llmkit.models import load_trained
    from llmkit.precision import DTYPES

    base = info["base_model"]
    dtype = dtype or declared_dtype(base["name"], base.get("revision")) or "float32"
    trained = load_trained(run_dir, merged=True)
    trained.model.to(DTYPES[dtype])
    work = output.with_name(output.name + ".incomplete")
    shutil.rmtree(work, ignore_errors=True)
    trained.model.save_pretrained(work)
    trained.tokenizer.save_pretrained(work)
    if output.exists():
        output.rmdir()
    work.rename(output)
    return output, dtype
