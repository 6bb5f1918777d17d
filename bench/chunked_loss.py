"""Chunked cross-entropy against the model's own loss: peak memory, tokens/s and held-out loss, in one run.

SmolLM2-135M-Instruct (49,152-token vocabulary), LoRA r = 16 on every linear layer, SFT on
data/instruction-data.json packed into rows of 512 tokens, batch 8: the same recipe twice, `training.chunked_loss`
true and false, each in a fresh process so each peak resident set size is its own. Tokens/s counts the input tokens
of the timed steps (every step after the first, which pays for warm-up) over their wall time; the held-out loss is
the token mean over the same held-out rows after training. With `--rounds 2` runs alternate off, on, on, off, so a
drift in background load hits both alike, and the median per setting is reported; the committed results ran one
round (10 to 25 minutes a run on 2 shared CPU cores).

    python bench/chunked_loss.py --output bench/chunked-results.json        (part of: make bench)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


def recipe(
    output_dir: str, chunked: bool, steps: int, batch: int, max_length: int, checkpointing: bool = False
) -> dict:
    return {
        "task": "sft",
        "model": {"name": "packaged:smollm2-135m-instruct"},
        "data": {
            "train": str(REPO / "data" / "instruction-data.json"),
            "format": "alpaca",
            "template": "chat",
            "max_length": max_length,
            "packing": True,
            "validation_split": 0.05,
            "max_eval_samples": 32,
        },
        "method": {"name": "lora", "r": 16, "lora_alpha": 32, "target_modules": "all-linear"},
        "training": {
            "max_steps": steps,
            "per_device_train_batch_size": batch,
            "per_device_eval_batch_size": batch,
            "learning_rate": 3e-4,
            "logging_steps": 1,
            "save_strategy": "no",
            "seed": 0,
            "chunked_loss": chunked,
            **({"gradient_checkpointing": True} if checkpointing else {}),
        },
        "output_dir": output_dir,
    }


def child(chunked: bool, steps: int, batch: int, max_length: int, checkpointing: bool, out: Path) -> None:
    """One training run in this process; writes its figures to `out`."""
    import torch
    from transformers import TrainerCallback

    import llmkit
    from llmkit.tasks import sft

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    timer = StepTimes()
    tokens: list[int] = []
    real_trainer = sft._trainer

    def trainer(*args, **kwargs):
        t = real_trainer(*args, **kwargs)
        t.add_callback(timer)
        collate = t.data_collator

        def counted(batch_rows):
            out = collate(batch_rows)
            if t.model.training:
                tokens.append(int(out["input_ids"].numel()))
            return out

        t.data_collator = counted
        return t

    sft._trainer = trainer
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result = llmkit.Trainer(
            llmkit.Recipe.from_dict(recipe(work + "/run", chunked, steps, batch, max_length, checkpointing))
        )
        metrics = result.train().metrics
    step_seconds = [timer.times[i + 1] - timer.times[i] for i in range(0, len(timer.times) - 1, 2)]
    timed = step_seconds[1:]
    timed_tokens = tokens[1 : len(step_seconds)]  # the collator runs once per step (no accumulation)
    out.write_text(
        json.dumps(
            {
                "chunked_loss": chunked,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "rss_before_mb": round(rss_before),
                "tokens_per_s": round(sum(timed_tokens) / sum(timed), 1),
                "step_seconds": [round(s, 2) for s in step_seconds],
                "eval_loss": metrics["eval_loss"],
                "train_loss": metrics["train_loss"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=1, help="each round runs both settings; order alternates")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="keep only each layer's input")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(
            args.child == "on", args.steps, args.batch, args.max_length, args.gradient_checkpointing, args.child_output
        )
        return

    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            for setting in ("off", "on") if r % 2 == 0 else ("on", "off"):
                out = Path(work) / f"{r}-{setting}.json"
                command = [sys.executable, __file__, "--child", setting, "--child-output", str(out)]
                command += ["--steps", str(args.steps), "--batch", str(args.batch)]
                command += ["--max-length", str(args.max_length)]
                command += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
                subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
                runs.append({"round": r, **json.loads(out.read_text())})
                print(json.dumps(runs[-1]), flush=True)

    summary = {}
    for on in (False, True):
        mine = [run for run in runs if run["chunked_loss"] is on]
        summary["chunked" if on else "model_loss"] = {
            "peak_rss_mb": statistics.median(run["peak_rss_mb"] for run in mine),
            "tokens_per_s": statistics.median(run["tokens_per_s"] for run in mine),
            "eval_loss": mine[0]["eval_loss"],
        }
    on, off = summary["chunked"], summary["model_loss"]
    summary["peak_memory_ratio"] = round(on["peak_rss_mb"] / off["peak_rss_mb"], 3)
    summary["tokens_per_s_ratio"] = round(on["tokens_per_s"] / off["tokens_per_s"], 3)
    summary["eval_loss_relative_difference"] = abs(on["eval_loss"] - off["eval_loss"]) / off["eval_loss"]
    print(json.dumps(summary, indent=2))
    if args.output:
        import torch
        import transformers

        setup = {
            k: v
            for k, v in vars(args).items()
            if k in ("steps", "batch", "max_length", "rounds", "gradient_checkpointing")
        }
        setup.update(
            machine=f"{platform.machine()}, {os.cpu_count()} CPU threads, no GPU",
            torch=torch.__version__,
            transformers=transformers.__version__,
            date=time.strftime("%Y-%m-%d"),
            malloc_mmap_threshold=os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc default"),
        )
        args.output.write_text(json.dumps({"setup": setup, "summary": summary, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
