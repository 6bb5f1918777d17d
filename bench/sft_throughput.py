"""SFT training throughput: llmkit vs a bare peft + torch loop vs TRL's SFTTrainer, on the same model, data, batch.

All three train the same 2-layer GPT-2 (LoRA r=8 on c_attn) on the same pre-tokenised instruction examples with
the same batch size, optimizer (AdamW), schedule (linear), gradient clipping (1.0) and batch order, so the ratio
measures framework overhead, not different work. Tokens/s counts non-padding input tokens over the training steps
only (data preparation and evaluation excluded). Runs are interleaved round-robin and the median per path is
reported, so load from other processes affects every path alike.

    python bench/sft_throughput.py --output bench/results.json        (or: make bench)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from peft import LoraConfig, get_peft_model

import llmkit
from llmkit.data.collate import Collator
from llmkit.data.sft import build_examples

REPO = Path(__file__).resolve().parent.parent
GPT2_TOKENIZER = REPO.parent / "shared" / "data" / "gpt2-tokenizer"
DATA = REPO / "data" / "instruction-data.json"
LR, SEED = 2e-4, 0


def gpt2_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """The real GPT-2 vocabulary when ../shared is beside the repo; else llmkit's small test BPE."""
    from llmkit.testing import gpt2_tokenizer as real_gpt2
    from llmkit.testing import tiny_tokenizer

    tok = real_gpt2(GPT2_TOKENIZER) if (GPT2_TOKENIZER / "encoder.json").is_file() else tiny_tokenizer("gpt2")
    tok.pad_token = tok.eos_token
    return tok


def save_model(directory: Path, tokenizer: transformers.PreTrainedTokenizerBase, n_embd: int) -> Path:
    torch.manual_seed(SEED)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=2,
        n_embd=n_embd,
        n_head=4,
        n_positions=512,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def examples(tokenizer, max_length: int) -> list[dict]:
    rows = json.loads(DATA.read_text())
    out, _, _ = build_examples(
        rows,
        [str(i) for i in range(len(rows))],
        fmt="alpaca",
        tokenizer=tokenizer,
        template="alpaca",
        system_prompt=None,
        max_length=max_length,
        overlong="drop",
        stop_ids={tokenizer.eos_token_id},
    )
    return out


def lora_config() -> LoraConfig:
    return LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM"
    )


def run_bare(model_dir: Path, data: list[dict], pad_id: int, batch: int, steps: int) -> float:
    """The loop a user would write by hand with peft and torch."""
    torch.manual_seed(SEED)
    model = get_peft_model(transformers.AutoModelForCausalLM.from_pretrained(model_dir), lora_config())
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, 0, steps)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(SEED)).tolist()
    collate = Collator(pad_id)
    tokens = 0
    start = time.perf_counter()
    for step in range(steps):
        idx = order[(step * batch) % len(order) :][:batch]
        inputs = collate([data[i] for i in idx])
        tokens += int(inputs["attention_mask"].sum())
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    return tokens / (time.perf_counter() - start)


def run_llmkit(model_dir: Path, batch: int, steps: int, max_length: int, work: Path) -> float:
    recipe = llmkit.Recipe.from_dict(
        {
            "model": {"name": str(model_dir)},
            "data": {
                "train": str(DATA),
                "format": "alpaca",
                "template": "alpaca",
                "max_length": max_length,
                "validation_split": 0,
            },
            "method": {"name": "lora", "r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["c_attn"]},
            "training": {
                "max_steps": steps,
                "per_device_train_batch_size": batch,
                "learning_rate": LR,
                "lr_scheduler_type": "linear",
                "save_strategy": "no",
                "logging_steps": steps,
                "seed": SEED,
                "disable_tqdm": True,
            },
            "output_dir": str(work / f"llmkit-{time.monotonic_ns()}"),
        }
    )
    return llmkit.Trainer(recipe).train().metrics["tokens_per_second"]


def run_trl(model_dir: Path, data: list[dict], batch: int, steps: int, work: Path) -> float:
    """TRL's SFTTrainer given the same pre-tokenised examples (input_ids + completion_mask)."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    rows = {
        "input_ids": [ex["input_ids"].tolist() for ex in data],
        "completion_mask": [(ex["labels"] != -100).astype(int).tolist() for ex in data],
    }
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    args = SFTConfig(
        output_dir=str(work / "trl"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=LR,
        lr_scheduler_type="linear",
        save_strategy="no",
        logging_steps=steps,
        seed=SEED,
        report_to="none",
        disable_tqdm=True,
        completion_only_loss=True,
        max_length=None,
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=False,
        bf16=False,
        gradient_checkpointing=False,
    )  # TRL defaults both on; like-for-like here
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_dict(rows), peft_config=lora_config()
    )
    result = trainer.train()
    return trainer.state.num_input_tokens_seen / result.metrics["train_runtime"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()

    tokenizer = gpt2_tokenizer()
    data = examples(tokenizer, args.max_length)
    paths = ["bare", "llmkit"] + ([] if args.skip_trl else ["trl_sfttrainer"])
    results: dict[str, list[float]] = {p: [] for p in paths}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = save_model(work / "model", tokenizer, args.n_embd)
        for rep in range(-1, args.repeats):  # round -1 warms up allocators and lazy imports; it is not counted
            for path in paths:
                if path == "bare":
                    tps = run_bare(model_dir, data, tokenizer.pad_token_id, args.batch, args.steps)
                elif path == "llmkit":
                    tps = run_llmkit(model_dir, args.batch, args.steps, args.max_length, work)
                else:
                    tps = run_trl(model_dir, data, args.batch, args.steps, work)
                if rep >= 0:
                    results[path].append(tps)
                print(f"round {rep + 1}/{args.repeats} {path:>15}: {tps:8.1f} tokens/s", file=sys.stderr)

    median = {p: statistics.median(v) for p, v in results.items()}
    report = {
        "setup": {
            "model": f"GPT-2, 2 layers, n_embd {args.n_embd}, vocab {len(tokenizer)}",
            "method": "LoRA r=8 c_attn",
            "batch": args.batch,
            "steps": args.steps,
            "max_length": args.max_length,
            "examples": len(data),
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
            "versions": {m.__name__: m.__version__ for m in (torch, transformers, llmkit)},
        },
        "tokens_per_second": {p: round(m, 1) for p, m in median.items()},
        "all_runs": {p: [round(x, 1) for x in v] for p, v in results.items()},
        "ratio_to_bare": {p: round(m / median["bare"], 3) for p, m in median.items()},
    }
    print(json.dumps(report["ratio_to_bare"], indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
