"""Every fine-tuning method on the same model, data and steps: trainable parameters, peak memory, tokens/s and the
held-out loss before and after. One command writes a JSON results file and a markdown table:

    python bench/methods.py                       # SmolLM2-135M-Instruct, 1,100 instructions (make bench-methods)
    python bench/methods.py --tiny --steps 4      # a tiny random model: checks the script end to end in a minute
    python bench/methods.py --methods lora,qlora --merge --note "..."   # re-measure some rows, keep the others

Each method trains in its own `llmkit train` process, so peak memory (max RSS on CPU, max allocated on CUDA) is that
method's alone. Learning rates are each method's usual one (the same as its recipe); everything else is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from llmkit.families import family_of, resolve_model  # noqa: E402  (torch-free)
from llmkit.methods import METHODS  # noqa: E402

# method label → (method block, learning rate). Labels beyond method names are options of one (DoRA of lora).
METHOD_RUNS: dict[str, tuple[dict, float]] = {
    "full": ({"name": "full"}, 2e-5),
    "lora": ({"name": "lora", "r": 16, "lora_alpha": 32, "target_modules": "all-linear"}, 2e-4),
    "dora": ({"name": "lora", "r": 16, "lora_alpha": 32, "target_modules": "all-linear", "use_dora": True}, 2e-4),
    "rslora": ({"name": "lora", "r": 16, "lora_alpha": 32, "target_modules": "all-linear", "use_rslora": True}, 2e-4),
    "qlora": ({"name": "qlora", "r": 16, "lora_alpha": 32, "target_modules": "all-linear"}, 2e-4),
    "adalora": ({"name": "adalora", "init_r": 12, "target_r": 4, "target_modules": "all-linear"}, 5e-4),
    "ia3": ({"name": "ia3"}, 3e-3),
    "prefix_tuning": ({"name": "prefix_tuning", "num_virtual_tokens": 20}, 5e-3),
    "prompt_tuning": ({"name": "prompt_tuning", "num_virtual_tokens": 20}, 3e-2),
    "llama_adapter": ({"name": "llama_adapter", "adapter_len": 10}, 9e-3),
    "bitfit": ({"name": "bitfit"}, 1e-3),
    "adapter": ({"name": "adapter", "architecture": "houlsby", "reduction_factor": 16}, 1e-3),
    "adapter_fusion": ({"name": "adapter_fusion"}, 5e-5),  # adapters: the `adapter` run + one more, trained first
}
FIELDS = ("trainable_params", "total_params", "peak_memory_mb", "peak_memory_kind", "tokens_per_second",
          "eval_loss_before", "eval_loss", "train_runtime_s")  # fmt: skip


def recipe(args: argparse.Namespace, model: str, block: dict, lr: float, out: Path, **data: object) -> dict:
    return {
        "task": "sft",
        "model": {"name": model},
        "data": {
            "train": str(REPO / "data" / "instruction-data.json"),
            "format": "alpaca",
            "max_length": args.max_length,
            "validation_split": 0.05,
            "max_eval_samples": args.eval_samples,
            **data,
        },
        "method": block,
        "training": {
            "max_steps": args.steps,
            "per_device_train_batch_size": args.batch,
            "per_device_eval_batch_size": args.batch,
            "learning_rate": lr,
            "lr_scheduler_type": "constant",
            "logging_steps": max(1, args.steps // 4),
            "save_strategy": "no",
            "seed": 0,
        },
        "output_dir": str(out),
    }


def train(spec: dict, work: Path, label: str) -> dict:
    """One `llmkit train` in a fresh process; its metrics.json, or the error it printed."""
    path = work / f"{label}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    print(f"bench: {label} ...", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "llmkit", "train", str(path)], capture_output=True, text=True)
    (work / f"{label}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    metrics = json.loads((Path(spec["output_dir"]) / "metrics.json").read_text())
    return {k: metrics.get(k) for k in FIELDS}


def run_all(args: argparse.Namespace, model: str, family: str, work: Path) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for label in args.methods:
        block, lr = METHOD_RUNS[label]
        why = METHODS[block["name"]].why_not(family, "sft")
        if why is not None:
            results[label] = {"skipped": why}
            continue
        if label == "adapter_fusion":  # fuse the `adapter` run with a second adapter (the Alpaca prompt format)
            first = work / "runs" / "adapter"
            if not first.is_dir():
                results["adapter"] = train(recipe(args, model, *METHOD_RUNS["adapter"], first), work, "adapter")
            second = work / "runs" / "adapter-alpaca"
            spec = recipe(args, model, *METHOD_RUNS["adapter"], second, template="alpaca")
            if "error" in train(spec, work, "adapter-alpaca"):
                results[label] = {"error": "the second adapter run failed; see adapter-alpaca.log"}
                continue
            block = {**block, "adapters": [str(first), str(second)]}
        results[label] = train(recipe(args, model, block, lr, work / "runs" / label), work, label)
    return results


def markdown(results: dict[str, dict], info: dict) -> str:
    lines = [
        f"Measured with `{info['command']}` on {info['when']} ({info['machine']}).",
        f"Model `{info['model']}`; `data/instruction-data.json` (Alpaca rows in the chat template, up to "
        f"{info['max_length']} tokens); {info['steps']} steps of batch {info['batch']}, constant learning rate; "
        f"held-out loss on {info['eval_samples']} held-out rows. Peak memory: {info['memory']}.",
        "",
        "| method | trainable params | % of total | peak memory (MB) | tokens/s | held-out loss before → after |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    later = {label: r["remeasured"] for label, r in results.items() if "remeasured" in r}
    for when, command, note in sorted({(m["when"], m["command"], m["note"]) for m in later.values()}):
        rows = ", ".join(
            f"`{label}`" for label, m in later.items() if (m["when"], m["command"], m["note"]) == (when, command, note)
        )
        lines[2:2] = ["", f"Re-measured on {when} with `{command}`: {rows}. {note}".rstrip()]
    for label, r in results.items():
        if "skipped" in r or "error" in r:
            lines.append(
                f"| `{label}` | {'n/a: ' + r['skipped'] if 'skipped' in r else 'failed: ' + r['error']} | | | | |"
            )
            continue
        share = 100 * r["trainable_params"] / r["total_params"]
        lines.append(
            f"| `{label}` | {r['trainable_params']:,} | {share:.3f} | {r['peak_memory_mb']:,.0f} | "
            f"{r['tokens_per_second']:,.0f} | {r['eval_loss_before']:.4f} → {r['eval_loss']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead (checks the script)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--methods", default=",".join(METHOD_RUNS), help="comma-separated labels")
    parser.add_argument("--work", default="outputs/bench-methods", help="where runs and logs go (must be new)")
    parser.add_argument("--output", default="bench/methods-results.json")
    parser.add_argument("--markdown", default="docs/methods-benchmark.md")
    parser.add_argument("--merge", action="store_true", help="replace only these rows in the existing --output")
    parser.add_argument("--note", default="", help="with --merge: why the rows were re-measured (in the table)")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHOD_RUNS))
    if unknown:
        parser.error(f"unknown method labels {unknown}; choose from {', '.join(METHOD_RUNS)}")
    work = Path(args.work)
    if work.exists() and any(work.iterdir()):
        parser.error(f"--work {work} exists and is not empty; give a new directory")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    model = args.model
    if args.tiny:
        from llmkit.testing import save_tiny

        model = str(save_tiny("llama", work / "tiny-llama", hidden_size=64, intermediate_size=128))
    family = family_of(resolve_model(model).model_type or "llama")
    import torch

    gpu = torch.cuda.is_available()
    info = {
        "command": "python bench/methods.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d"),
        "machine": torch.cuda.get_device_name()
        if gpu
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, no GPU",
        "memory": "max CUDA memory allocated" if gpu else "max resident set size of the training process",
        "model": model if not args.tiny else "tiny random Llama (64 wide, 2 layers)",
        **{k: getattr(args, k) for k in ("steps", "batch", "max_length", "eval_samples")},
    }
    results = run_all(args, model, family, work)
    if args.merge:  # the earlier setup stays the table's; each new row says when and how it was measured
        earlier = json.loads(Path(args.output).read_text())
        for r in results.values():
            r["remeasured"] = {"when": info["when"], "command": info["command"], "note": args.note}
        results, info = {**earlier["results"], **results}, earlier["setup"]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"setup": info, "results": results}, indent=2) + "\n")
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(markdown(results, info))
    print(markdown(results, info))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
