"""`llmkit plan RECIPE [--device cuda:80GB|cpu]`: will it fit? From the model's config alone, without torch or
weights: parameters, what trains, peak memory term by term, and the largest per-device batch that fits with the
gradient accumulation that keeps the recipe's global batch. Accuracy against measured peaks: bench/README.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace

from llmkit.errors import LlmkitError
from llmkit.families import CHUNKED_TASKS, EXACT_HEAD_MODEL_TYPES, chunk_tokens
from llmkit.plan.arch import Arch, arch_of
from llmkit.plan.config import model_config
from llmkit.plan.memory import Setup, Terms, estimate
from llmkit.plan.methods import Trains, trains
from llmkit.recipe import Recipe

GIB = 1024**3
TRANSFORMERS_BATCH = 8  # TrainingArguments' per_device_train_batch_size default


@dataclass(frozen=True)
class Device:
    kind: str  # cpu or cuda
    memory: int  # bytes
    label: str


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    arch: Arch
    trains: Trains
    device: Device
    setup: Setup
    batch: int
    accumulation: int
    terms: Terms
    fits: bool
    best_batch: int | None  # the largest divisor of the per-device global batch that fits

    def at(self, batch: int, seq: int | None = None, checkpointing: bool | None = None) -> Terms:
        setup = replace(self.setup, seq=seq or self.setup.seq)
        if checkpointing is not None:
            setup = replace(setup, checkpointing=checkpointing)
        return estimate(self.arch, self.trains, setup, batch)


def parse_device(text: str | None) -> Device:
    """`cpu`, `cuda:80GB` (GiB, as GPUs are sold), or None: this machine's first GPU, else its memory."""
    if text is None:
        found = _local_gpu()
        return found if found is not None else parse_device("cpu")
    if text == "cpu":
        return Device("cpu", _physical_memory(), f"cpu ({_physical_memory() / GIB:.1f} GiB of memory)")
    match = re.fullmatch(r"cuda:(\d+(?:\.\d+)?)\s*gi?b", text.strip().lower())
    if not match:
        raise LlmkitError(f"--device: '{text}' is neither cpu nor cuda:<memory>GB (e.g. cuda:80GB).")
    gib = float(match.group(1))
    return Device("cuda", int(gib * GIB), f"cuda ({gib:g} GiB)")


def _physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _local_gpu() -> Device | None:
    """The first GPU nvidia-smi reports, without importing torch."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout  # fmt: skip
        mib = int(out.splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None
    return Device("cuda", mib * 2**20, f"cuda ({mib / 1024:.0f} GiB, this machine's GPU)")


def plan(recipe: Recipe, device: str | None = None) -> Plan:
    dev = parse_device(device)
    family = recipe.model_ref().family
    head = recipe.head(family)
    labels = recipe.classification.labels if recipe.classification else None
    num_labels = len(labels) if labels else (recipe.classification.num_labels if recipe.classification else None)
    arch = arch_of(model_config(recipe.model), head, num_labels or 2)
    what = trains(arch, recipe.method, head)
    setup = _setup(recipe, arch, what, dev, head)
    batch = recipe.training.per_device_train_batch_size or TRANSFORMERS_BATCH
    accumulation = recipe.training.gradient_accumulation_steps or 1
    terms = estimate(arch, what, setup, batch)
    per_device = batch * accumulation
    divisors = [b for b in range(per_device, 0, -1) if per_device % b == 0]
    fitting = [b for b in divisors if estimate(arch, what, setup, b).total <= dev.memory]
    return Plan(recipe, arch, what, dev, setup, batch, accumulation, terms, terms.total <= dev.memory,
                fitting[0] if fitting else None)  # fmt: skip


def _setup(recipe: Recipe, arch: Arch, what: Trains, dev: Device, head: str) -> Setup:
    """The settings `llmkit train` would resolve on that device (llmkit.precision), without torch."""
    setting = recipe.model.dtype
    gpu = dev.kind == "cuda"  # planned as a bf16-capable GPU (Ampere or newer)
    if setting == "auto":
        setting = "bfloat16" if gpu and not what.base_weights else "float32"
    bf16 = recipe.training.bf16
    autocast = gpu and not recipe.training.fp16 if bf16 == "auto" else bool(bf16 or recipe.training.fp16)
    method = recipe.method
    data = recipe.data
    return Setup(
        device=dev.kind,
        weight_dtype=setting,
        autocast=autocast,
        checkpointing=bool(recipe.training.gradient_checkpointing),
        optim=recipe.training.optim or "adamw_torch_fused",  # TrainingArguments' default on torch >= 2.8
        head=head,
        seq=data.max_length,
        target=(data.max_target_length or data.max_length) if head == "seq2seq_lm" else 0,
        four_bit=method.name == "qlora",
        double_quant=getattr(method, "bnb_4bit_use_double_quant", True),
        chunk=_chunk(recipe, arch, head),
    )


def _chunk(recipe: Recipe, arch: Arch, head: str) -> int:
    """Tokens per chunk where `llmkit train` would use the chunked loss (`llmkit.chunked.enabled`), else 0."""
    training = recipe.training
    sharded = bool((training.model_extra or {}).get("fsdp") or (training.model_extra or {}).get("deepspeed"))
    applies = recipe.task in CHUNKED_TASKS and head != "seq_cls" and arch.model_type in EXACT_HEAD_MODEL_TYPES
    applies = applies and recipe.method.name != "adalora"  # its regularisation rides on the model's own loss
    return chunk_tokens(arch.vocab) if training.chunked_loss and applies and not sharded else 0


def render(p: Plan) -> str:
    """The plan as `llmkit plan` prints it."""
    a, t, s = p.arch, p.trains, p.setup
    total = a.total_params()
    lines = [
        f"model     {p.recipe.model.name} ({a.model_type}): {total:,} parameters; method {p.recipe.method.name} "
        f"trains {t.trainable:,} ({100 * t.trainable / total:.2f}%)",
        f"device    {p.device.label}; weights {s.weight_dtype}{' (4-bit base)' if s.four_bit else ''}, "
        f"{'bf16 autocast' if s.autocast else 'no autocast'}; per device: batch {p.batch} x {_tokens(s)}, "
        f"gradient accumulation {p.accumulation}",
        "",
        "peak memory of a training step",
        f"  weights           {_size(p.terms.weights)}",
        f"  gradients         {_size(p.terms.gradients)}",
        f"  optimizer state   {_size(p.terms.optimizer)}  ({s.optim})",
        f"  activations       {_size(p.terms.activations)} without gradient checkpointing, "
        f"{_size(p.terms.activations_checkpointed)} with{' (on)' if s.checkpointing else ''}",
        f"  logits            {_size(p.terms.logits)}"
        + (f"  (one chunk of {s.chunk} trained tokens at a time: training.chunked_loss)" if s.chunk else ""),
        f"  total             {_size(p.terms.total)} of {_size(p.device.memory)}: "
        + ("fits" if p.fits else "does NOT fit"),
        "",
        f"activations by sequence length (batch {p.batch}, without / with gradient checkpointing):",
    ]
    for seq in _lengths(s.seq):
        lines.append(f"  {seq:>6} tokens   {_size(p.at(p.batch, seq).activations)} / "
                     f"{_size(p.at(p.batch, seq).activations_checkpointed)}")  # fmt: skip
    per_device = p.batch * p.accumulation
    if p.best_batch is None:
        lines.append("\nnot even batch 1 fits: try training.gradient_checkpointing: true, method lora or qlora, or "
                     "a shorter data.max_length")  # fmt: skip
    else:
        lines.append(f"\nlargest per-device batch that fits: {p.best_batch} with gradient_accumulation_steps "
                     f"{per_device // p.best_batch} (keeps {per_device} examples per device per step)")  # fmt: skip
    if p.device.kind == "cuda":
        lines.append("GPU figures are estimates not measured on GPU; the CPU estimates are checked in bench/README.md.")
    return "\n".join(lines)


def _tokens(s: Setup) -> str:
    return f"{s.seq} + {s.target} tokens" if s.target else f"{s.seq} tokens"


def _lengths(seq: int) -> list[int]:
    return sorted({max(16, seq // 4), max(16, seq // 2), seq, seq * 2})


def _size(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.0f} MiB"
