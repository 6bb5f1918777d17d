"""How close `llmkit plan` comes to the memory a training step really takes, on this machine's CPU.

    python bench/plan_memory.py --output bench/plan-results.json [--only NAME ...]

Each case is a real recipe run for 2 optimizer steps (the second holds the optimizer state) in a fresh process, on
data that fills every row to max_length (packed text windows, long truncated texts), so the planned worst case is
the case measured. Measured: the process's peak resident memory (ru_maxrss) minus its resident memory once the
libraries are imported and the data is prepared, i.e. what the model, its training state and the step added. Twice:
with glibc's default allocator, which keeps freed blocks of up to 32 MiB in its heap (so resident memory stays above
the tensors alive), and with MALLOC_MMAP_THRESHOLD_=131072, which returns every freed block over 128 KiB to the
system, so resident memory follows the tensors alive: what the plan estimates.
Estimated: `llmkit.plan.plan(recipe, "cpu")`, from the model config alone. GPU: not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
STEPS = 2
TRAINING = {"max_steps": STEPS, "learning_rate": 1e-4, "logging_steps": 1, "save_strategy": "no", "seed": 0}
SMOL = "packaged:smollm2-135m-instruct"
ALLOCATORS = {"glibc_default": {}, "mmap_threshold_128k": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


def cases(data: dict[str, Path]) -> dict[str, dict]:
    text = {"train": str(data["text"]), "format": "text", "max_length": 256, "overlong": "split", "packing": True,
            "validation_split": 0}  # fmt: skip
    lora = {"name": "lora", "r": 16, "lora_alpha": 32, "target_modules": "all-linear"}
    return {
        "sft-full": {"task": "sft", "model": {"name": SMOL}, "data": text, "method": "full",
                     "training": {**TRAINING, "per_device_train_batch_size": 2}},
        "sft-lora": {"task": "sft", "model": {"name": SMOL}, "data": text, "method": lora,
                     "training": {**TRAINING, "per_device_train_batch_size": 4}},
        "sft-lora-checkpointing": {"task": "sft", "model": {"name": SMOL}, "data": text, "method": lora,
                                   "training": {**TRAINING, "per_device_train_batch_size": 4,
                                                "gradient_checkpointing": True}},
        "sft-qlora": {"task": "sft", "model": {"name": SMOL}, "data": text, "method": {**lora, "name": "qlora"},
                      "training": {**TRAINING, "per_device_train_batch_size": 4}},
        "classification-full": {"task": "classification", "model": {"name": "packaged:all-minilm-l6-v2"},
                                "data": {"train": str(data["sms"]), "format": "classification", "max_length": 128,
                                         "overlong": "truncate", "validation_split": 0},
                                "method": "full", "training": {**TRAINING, "per_device_train_batch_size": 32}},
        "seq2seq-full": {"task": "seq2seq", "model": {"name": str(data["t5"])},
                         "data": {"train": str(data["pairs"]), "format": "seq2seq", "max_length": 256,
                                  "max_target_length": 64, "overlong": "truncate", "validation_split": 0},
                         "method": "full", "training": {**TRAINING, "per_device_train_batch_size": 8}},
    }  # fmt: skip


def write_data(root: Path) -> dict[str, Path]:
    """Rows long enough to fill max_length: the instructions as one text (split into windows and packed), SMS
    messages ten to a row (truncated at 128 tokens), and long source/target pairs; plus a T5 the size of t5-small
    (random weights: memory does not depend on them)."""
    rows = json.loads((REPO / "data" / "instruction-data.json").read_text())
    text = root / "instructions.txt"
    text.write_text("\n\n".join(f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in rows))
    lines = (REPO / "data" / "sms-spam" / "train.tsv").read_text().splitlines()[1:]
    sms = root / "sms.jsonl"
    with sms.open("w") as f:
        for start in range(0, 640, 10):
            chunk = [line.split("\t", 1) for line in lines[start : start + 10]]
            f.write(json.dumps({"text": " ".join(t for _, t in chunk), "label": chunk[0][0]}) + "\n")
    pairs = root / "pairs.jsonl"
    with pairs.open("w") as f:
        for start in range(0, 400, 5):
            source = " ".join(r["output"] for r in rows[start : start + 12])
            f.write(json.dumps({"source": source, "target": source[: len(source) // 2]}) + "\n")
    from llmkit.testing import save_tiny

    t5 = save_tiny("t5", root / "t5-small-shape", d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6,
                   num_decoder_layers=6, dropout_rate=0.1, vocab_size=32128)  # fmt: skip
    return {"text": text, "sms": sms, "pairs": pairs, "t5": t5}


def measure(recipe_path: str) -> dict:
    """Run in a fresh process: prepare the data, note resident memory, train (model load included), note the peak."""
    import gc
    import resource

    import psutil

    from llmkit import models, tasks
    from llmkit.console import set_verbosity
    from llmkit.outputs import RunDir
    from llmkit.recipe import Recipe
    from llmkit.run import RunEnv, distributed_state

    recipe = Recipe.from_yaml(recipe_path)
    set_verbosity()
    distributed_state(recipe)
    run = RunDir.for_output(recipe.output_dir)
    run.start(recipe.to_yaml(), None)
    env = RunEnv(recipe, run, models.resolve_base(recipe.model, recipe.model_ref()))
    task = tasks.get(recipe.task)
    task.prepare(env, env.tokenizer())  # the allocations data preparation makes, before the baseline
    gc.collect()
    before = psutil.Process().memory_info().rss
    result = task.run(env)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"measured_bytes": peak - before, "baseline_bytes": before, "steps": result.metrics["train_steps"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="bench/plan-results.json")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--allocator", nargs="*", choices=list(ALLOCATORS))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    from llmkit.plan import plan
    from llmkit.recipe import Recipe

    results = json.loads(Path(args.output).read_text()) if Path(args.output).is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, recipe in cases(write_data(root)).items():
            if args.only and name not in args.only:
                continue
            path = root / f"{name}.yaml"
            path.write_text(yaml.safe_dump({**recipe, "output_dir": str(root / name)}, sort_keys=False))
            planned = plan(Recipe.from_yaml(path), "cpu")
            terms = planned.terms
            result = results.setdefault(name, {})
            result["planned_bytes"] = terms.total
            result["planned"] = {k: getattr(terms, k) for k in ("weights", "gradients", "optimizer", "logits")}
            result["planned"]["activations"] = (
                terms.activations_checkpointed if terms.checkpointing else terms.activations
            )
            for allocator, env in ALLOCATORS.items():
                if args.allocator and allocator not in args.allocator:
                    continue
                command = [sys.executable, __file__, "--measure", str(path)]
                done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
                measured = json.loads(done.stdout.strip().splitlines()[-1])["measured_bytes"]
                result.setdefault("measured_bytes", {})[allocator] = measured
                result.setdefault("error", {})[allocator] = round(terms.total / measured - 1, 3)
                print(f"{name} ({allocator}): planned {terms.total / 2**20:,.0f} MiB, measured "
                      f"{measured / 2**20:,.0f} MiB ({terms.total / measured - 1:+.1%})", flush=True)  # fmt: skip
                Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
