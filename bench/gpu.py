"""GPU training benchmark: a ~1B-parameter Llama (random init, no hub), bf16, sequences of 2,048 packed tokens; LoRA,
QLoRA and full fine-tuning, each through llmkit, a bare peft + torch loop and TRL's SFTTrainer, in one run.

    python bench/gpu.py                      # on one CUDA GPU (make bench-gpu); without one it says so and exits 0
    python bench/gpu.py --dry-run            # a tiny Llama, a few steps, on CPU: checks every path end to end

Reports tokens/s after warm-up steps, MFU (6N FLOPs per token for full fine-tuning, 4N for LoRA and QLoRA, where
the frozen base needs no weight gradients; N: parameters less the input embedding) against the GPU's dense bf16 peak,
and peak memory (torch.cuda.max_memory_allocated and max_memory_reserved). Writes JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Dense bf16 tensor-core peaks (TFLOPS, no sparsity) from NVIDIA's data sheets, matched on the device name in order.
PEAK_BF16_TFLOPS = [
    (r"GH200|H200", 989.0),
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"H100", 989.0),  # SXM
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
]
SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024, max_position_embeddings=512),
}  # fmt: skip
METHODS = ("lora", "qlora", "full")
RUNNERS = ("bare", "llmkit", "trl")
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
LR = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}
SEED = 0


def peak_tflops(device_name: str) -> float | None:
    """The GPU's dense bf16 peak, or None for a GPU not in the table (MFU is then not reported)."""
    return next((peak for pattern, peak in PEAK_BF16_TFLOPS if re.search(pattern, device_name)), None)


def flops_per_token(n_params: int, method: str) -> int:
    """6N for full fine-tuning (forward 2N, backward 4N); 4N for adapters, whose frozen base skips weight grads."""
    return (6 if method == "full" else 4) * n_params


def save_base(work: Path, shape: str) -> tuple[Path, int]:
    """A random-init Llama saved once for every runner, with the repo's own small BPE tokenizer (offline)."""
    import torch
    import transformers

    from llmkit.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer("llama")
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = transformers.LlamaConfig(**SHAPES[shape], **ids, tie_word_embeddings=False)
    torch.manual_seed(SEED)
    model = transformers.LlamaForCausalLM(config)
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    directory = work / "base"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, n


def write_text_data(work: Path, tokens_needed: int, tokenizer: Any) -> tuple[Path, list[int]]:
    """The repo's instruction rows as plain text, repeated until there are enough tokens; the same text as one
    token stream for the bare loop and TRL (llmkit tokenises and packs the file itself)."""
    rows = json.loads((REPO / "data" / "instruction-data.json").read_text())
    texts = [" ".join(filter(None, (r["instruction"], r["input"], r["output"]))) for r in rows]
    stream: list[int] = []
    lines: list[str] = []
    for i in range(10**9):  # the rows again and again, until there are enough tokens
        if len(stream) >= tokens_needed:
            break
        text = texts[i % len(texts)]
        lines.append(json.dumps({"text": text}))
        stream += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    path = work / "text.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, stream


class StepClock:
    """The time (after a CUDA sync) and tokens seen at the end of every optimizer step."""

    def __init__(self) -> None:
        self.ends: list[tuple[float, int]] = []

    def tick(self, tokens: int) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append((time.perf_counter(), tokens))

    def tokens_per_second(self, warmup: int) -> float:
        (t0, n0), (t1, n1) = self.ends[warmup - 1], self.ends[-1]
        return (n1 - n0) / (t1 - t0)


def clock_trainer_steps(clock: StepClock) -> None:
    """Every transformers Trainer (llmkit's and TRL's) ticks the clock at each step's end."""
    from transformers.trainer_callback import CallbackHandler

    original = CallbackHandler.on_step_end

    def on_step_end(self: Any, args: Any, state: Any, control: Any) -> Any:
        clock.tick(state.num_input_tokens_seen)
        return original(self, args, state, control)

    CallbackHandler.on_step_end = on_step_end


def load_for(method: str, base: Path) -> Any:
    """The model a hand-written script would build, in the dtypes llmkit picks for the method (bf16 weights for
    adapters on a bf16 GPU, float32 weights under bf16 autocast for full fine-tuning, float32 on CPU)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if gpu and method != "full" else torch.float32
    kwargs: dict[str, Any] = {}
    if method == "qlora":
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()} if gpu else None
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=dtype, **kwargs)
    if method == "qlora":
        from llmkit.methods.qlora import keep_4bit_training_layout  # a CPU-only bitsandbytes pitfall, not llmkit's

        keep_4bit_training_layout(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    elif gpu:
        model = model.to("cuda")
    if method != "full":
        model = get_peft_model(model, LoraConfig(**LORA, task_type="CAUSAL_LM"))
    return model


def run_bare(method: str, base: Path, stream: list[int], args: argparse.Namespace, clock: StepClock) -> None:
    import torch

    torch.manual_seed(SEED)
    model = load_for(method, base)
    model.train()
    device = next(p for p in model.parameters() if p.requires_grad).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR[method], fused=device.type == "cuda")
    per_step = args.batch * args.seq
    for step in range(args.steps):
        chunk = torch.tensor(stream[step * per_step : (step + 1) * per_step], device=device).view(args.batch, args.seq)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(input_ids=chunk, labels=chunk).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.tick((step + 1) * per_step)


def run_llmkit(method: str, base: Path, text: Path, args: argparse.Namespace, work: Path) -> None:
    """What a user runs: a recipe through llmkit.Trainer (data tokenised and packed by llmkit itself)."""
    import llmkit

    block = {"name": "full"} if method == "full" else {"name": method, **LORA}
    recipe = {
        "task": "sft",
        "model": {"name": str(base)},
        "data": {"train": str(text), "format": "text", "max_length": args.seq, "packing": True, "validation_split": 0},
        "method": block,
        "training": {
            "max_steps": args.steps,
            "per_device_train_batch_size": args.batch,
            "learning_rate": LR[method],
            "lr_scheduler_type": "constant",
            "save_strategy": "no",
            "logging_steps": args.steps,
            "seed": SEED,
        },
        "output_dir": str(work / f"llmkit-{method}"),
    }
    llmkit.Trainer(llmkit.Recipe.from_dict(recipe)).train()


def run_trl(method: str, base: Path, stream: list[int], args: argparse.Namespace, work: Path) -> None:
    """TRL's SFTTrainer on the same packed token blocks as the bare loop, with its gradient checkpointing off."""
    import datasets
    import torch
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(SEED)
    per_step = args.batch * args.seq
    blocks = [stream[i : i + args.seq] for i in range(0, args.steps * per_step, args.seq)]
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token
    config = SFTConfig(
        output_dir=str(work / f"trl-{method}"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=LR[method],
        lr_scheduler_type="constant",
        save_strategy="no",
        logging_steps=args.steps,
        seed=SEED,
        report_to="none",
        disable_tqdm=True,
        max_length=None,
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        gradient_checkpointing=False,
    )
    dataset = datasets.Dataset.from_dict({"input_ids": blocks})
    SFTTrainer(model=load_for(method, base), args=config, train_dataset=dataset, processing_class=tokenizer).train()


def measure(runner: str, method: str, ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    left = torch.cuda.memory_allocated() if gpu else 0
    clock = ctx["clock"]
    clock.ends.clear()
    if runner == "bare":
        run_bare(method, ctx["base"], ctx["stream"], args, clock)
    elif runner == "llmkit":
        run_llmkit(method, ctx["base"], ctx["text"], args, ctx["work"])
    else:
        run_trl(method, ctx["base"], ctx["stream"], args, ctx["work"])
    out: dict[str, Any] = {"tokens_per_second": round(clock.tokens_per_second(args.warmup), 1)}
    if gpu:
        out["peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        out["peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20)
        out["allocated_before_mb"] = round(left / 2**20)  # what an earlier run left behind (should be ~0)
        if ctx["peak"]:
            achieved = out["tokens_per_second"] * flops_per_token(ctx["n_params"], method)
            out["mfu"] = round(achieved / (ctx["peak"] * 1e12), 4)
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
    return out


def markdown(report: dict[str, Any]) -> str:
    s = report["setup"]
    mfu = "MFU" if s["peak_bf16_tflops"] else "MFU (n/a: GPU only)" if s["dry_run"] else "MFU (n/a: GPU not in table)"
    lines = [
        f"{s['device']}, {s['when']}; {s['model']}; batch {s['batch']} × {s['seq']} tokens, {s['steps']} steps "
        f"({s['warmup']} warm-up steps not counted); torch {s['torch']}, transformers {s['transformers']}, "
        f"trl {s['trl']}, peft {s['peft']}.",
        "",
        f"| method | runner | tokens/s | {mfu} | peak allocated (MB) | peak reserved (MB) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for method, runners in report["results"].items():
        for runner, r in runners.items():
            if "skipped" in r or "error" in r:
                lines.append(f"| {method} | {runner} | {r.get('skipped') or 'failed: ' + r['error']} | | | |")
                continue
            mfu_cell = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
            memory = [f"{r[k]:,}" if k in r else "n/a" for k in ("peak_allocated_mb", "peak_reserved_mb")]
            lines.append(
                f"| {method} | {runner} | {r['tokens_per_second']:,.0f} | {mfu_cell} | {memory[0]} | {memory[1]} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="a tiny Llama on CPU, a few steps: checks every path")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 30; dry run 3)")
    parser.add_argument("--warmup", type=int, help="first steps not counted in tokens/s (default 5; dry run 1)")
    parser.add_argument("--batch", type=int, help="sequences per step (default 4; dry run 2)")
    parser.add_argument("--seq", type=int, help="tokens per packed sequence (default 2048; dry run 64)")
    parser.add_argument("--work", default="outputs/bench-gpu")
    parser.add_argument("--output", default="bench/gpu-results.json")
    parser.add_argument("--markdown", default="bench/gpu-results.md")
    args = parser.parse_args(argv)
    defaults = (3, 1, 2, 64) if args.dry_run else (30, 5, 4, 2048)
    for key, value in zip(("steps", "warmup", "batch", "seq"), defaults, strict=True):
        setattr(args, key, getattr(args, key) or value)
    if not 1 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and fewer than --steps")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA GPU here, so nothing is measured; run it on a GPU machine (make bench-gpu), "
              "or check it on CPU with --dry-run.")  # fmt: skip
        return 0
    if args.dry_run:
        torch.set_num_threads(1)  # a tiny model's small matmuls run faster on one thread than split over several
    import importlib.util

    import peft
    import transformers
    import trl

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base, n_params = save_base(work, "tiny" if args.dry_run else "1b")
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    text, stream = write_text_data(work, args.steps * args.batch * args.seq, tokenizer)
    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if gpu else "CPU (dry run: no GPU figures)"
    clock = StepClock()
    clock_trainer_steps(clock)
    ctx = {"base": base, "n_params": n_params, "text": text, "stream": stream, "work": work, "clock": clock,
           "peak": peak_tflops(device) if gpu else None}  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        results[method] = {}
        for runner in [r.strip() for r in args.runners.split(",") if r.strip()]:
            if method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
                results[method][runner] = {"skipped": "n/a: QLoRA needs bitsandbytes, not installed"}
                continue
            print(f"bench-gpu: {method} · {runner} ...", file=sys.stderr, flush=True)
            try:
                results[method][runner] = measure(runner, method, ctx, args)
            except Exception as exc:  # one failed path must not lose the others' figures
                results[method][runner] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            print(f"bench-gpu: {method} · {runner}: {results[method][runner]}", file=sys.stderr, flush=True)
    config = SHAPES["tiny" if args.dry_run else "1b"]
    report = {
        "setup": {
            "device": device,
            "dry_run": args.dry_run,
            "peak_bf16_tflops": ctx["peak"],
            "when": time.strftime("%Y-%m-%d"),
            "model": f"random-init Llama, hidden {config['hidden_size']}, {config['num_hidden_layers']} layers, "
            f"vocab {config['vocab_size']}, N = {n_params:,} parameters (less the input embedding)",
            "lora": LORA,
            **{k: getattr(args, k) for k in ("batch", "seq", "steps", "warmup")},
            **{m.__name__: m.__version__ for m in (torch, transformers, trl, peft)},
            "command": "python bench/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        },
        "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    Path(args.markdown).write_text(markdown(report))
    print(markdown(report))
    return 1 if any("error" in r for runners in results.values() for r in runners.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
