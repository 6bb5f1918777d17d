"""Where a training process's memory goes: resident memory (anonymous and file-backed) sampled through one real
`llmkit train` run of a methods-benchmark recipe, with a mark at each stage of the path, plus what the tensors
themselves hold (parameters by dtype, optimizer state). docs/memory.md reads its output.

    python bench/memory_profile.py --method qlora --output /tmp/qlora.json
    python bench/memory_profile.py --method imports    # only the imports: the floor before any model

It runs the same recipe as `bench/methods.py` (same model, data, steps), in this process, so one method per run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
MB = 2**20


def rss() -> dict[str, float]:
    """Resident memory now, in MB: total, anonymous (heap, tensors) and file-backed (mapped files, libraries)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


class Timeline:
    """Samples resident memory every few milliseconds; `mark` names the stage that starts now."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []
        self.mark("start")
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def mark(self, name: str, **facts: Any) -> None:
        now = rss()
        if self.stages:
            self.stages[-1]["end"] = now
        self.stages.append({"stage": name, "begin": now, "peak": dict(now), **facts})
        print(f"memory: {name:<32} rss {now['VmRSS']:8.1f} MB (anon {now['RssAnon']:.1f}, file {now['RssFile']:.1f})",
              file=sys.stderr, flush=True)  # fmt: skip

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            now, peak = rss(), self.stages[-1]["peak"]
            for key, value in now.items():
                peak[key] = max(peak.get(key, 0.0), value)

    def finish(self) -> list[dict[str, Any]]:
        self._stop.set()
        self.mark("end")
        return self.stages


def tensor_bytes(model: Any) -> dict[str, float]:
    """Parameter and buffer storage by dtype (MB), counting a storage shared by tied weights once."""
    seen, out = set(), {}
    for t in [*model.parameters(), *model.buffers()]:
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        key = str(t.dtype).removeprefix("torch.")
        out[key] = round(out.get(key, 0.0) + t.untyped_storage().nbytes() / MB, 1)
    return out


def optimizer_bytes(optimizer: Any) -> float:
    return round(sum(v.nbytes for s in optimizer.state.values() for v in s.values() if hasattr(v, "nbytes")) / MB, 1)


def wrap(owner: Any, name: str, before: Any, after: Any = None) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        before(*args, **kwargs)
        out = original(*args, **kwargs)
        if after is not None:
            after(out, *args, **kwargs)
        return out

    setattr(owner, name, wrapped)


# In import order, so each line is what that package adds (a package's own imports count as its own).
PACKAGES = ("torch", "sympy", "pyarrow", "pandas", "datasets", "accelerate", "tokenizers", "transformers",
            "transformers.modeling_utils", "bitsandbytes", "peft", "transformers.trainer", "trl", "llmkit.trainer",
            "llmkit.tasks.sft")  # fmt: skip


def profile(args: argparse.Namespace) -> list[dict[str, Any]]:
    line = Timeline()
    if args.method == "imports":
        import importlib

        for name in PACKAGES:
            if importlib.util.find_spec(name.split(".")[0]) is not None:
                importlib.import_module(name)
                line.mark(f"imported {name}")
        return line.finish()
    import torch

    line.mark("imported torch")
    import accelerate  # noqa: F401
    import transformers

    line.mark("imported transformers, peft, trl, datasets")
    import llmkit.models
    import llmkit.tasks.sft
    import llmkit.trainer
    from llmkit.recipe import Recipe

    line.mark("imported llmkit")
    from methods import METHOD_RUNS, recipe

    block, lr = METHOD_RUNS[args.method]
    ns = argparse.Namespace(max_length=128, eval_samples=32, steps=args.steps, batch=4)
    spec = recipe(ns, args.model, block, lr, Path(args.work) / args.method)
    steps = {"n": 0}

    wrap(llmkit.models, "resolve_base", lambda *a, **k: line.mark("resolve base (GGUF cache)"))
    wrap(llmkit.tasks.sft, "prepare", lambda *a, **k: line.mark("tokenizer loaded; prepare data"))
    wrap(
        llmkit.models,
        "load_model",
        lambda *a, **k: line.mark("load model"),
        lambda model, *a, **k: line.mark("apply method", loaded=tensor_bytes(model)),
    )
    wrap(
        llmkit.tasks.sft,
        "fit",
        lambda trainer, env, built: line.mark("trainer built; fit", built=tensor_bytes(built.model)),
    )

    def step(trainer: Any, *a: Any, **k: Any) -> None:
        steps["n"] += 1
        if steps["n"] in (1, 2, 3):
            facts = {} if steps["n"] == 1 else {"optimizer_state": optimizer_bytes(trainer.optimizer)}
            line.mark(f"training step {steps['n']}" + (" and on" if steps["n"] == 3 else ""), **facts)

    wrap(transformers.Trainer, "training_step", step)
    wrap(llmkit.trainer, "save_run", lambda *a, **k: line.mark("save"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    llmkit.trainer.train(Recipe.from_dict(spec))
    del torch
    return line.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="qlora", help="a bench/methods.py label, or 'imports'")
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--work", default="outputs/memory-profile")
    parser.add_argument("--output", help="JSON file for the stages")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M")
    stages = profile(args)
    peak = rss()["VmHWM"]
    print(f"memory: peak (VmHWM) {peak:.1f} MB", file=sys.stderr)
    if args.output:
        out = {"method": args.method, "when": started, "peak_rss_mb": peak, "stages": stages}
        Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
