"""Peak memory of one training step, term by term, from the layout and the recipe's settings.

Activations are what autograd keeps for the backward pass, counted per token per layer from what each block saves
(measured with `torch.autograd.graph.saved_tensors_hooks` on torch 2.13, sdpa attention, and written down as
formulas in the layout's dimensions): Llama-style layers save their norm inputs, q/k/v after rotary, the attention
output, the MLP's gate, SiLU and up outputs, plus the input of every linear layer whose weight trains or carries an
adapter. Attention dropout on CPU takes sdpa's math path, which keeps 3 attention maps per head (an S² term); T5's
attention is eager everywhere. bench/plan_memory.py checks the total against measured peaks.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmkit.plan.arch import Arch
from llmkit.plan.methods import Trains

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
OUTSIDE_LAYERS = {"llama": 3, "gpt2": 5, "bert": 4, "t5": 6}  # per token, in hidden widths: embeddings, final norm


@dataclass(frozen=True)
class Setup:
    """The run's settings that decide memory, resolved for one device."""

    device: str  # cpu or cuda
    weight_dtype: str
    autocast: bool
    checkpointing: bool
    optim: str
    head: str
    seq: int  # tokens per example (decoder-only and encoders), or per source (seq2seq)
    target: int = 0  # seq2seq: tokens per target
    four_bit: bool = False
    double_quant: bool = True
    chunk: int = 0  # tokens per chunk of the chunked loss (`llmkit.chunked`); 0: the model computes every logit

    @property
    def act_bytes(self) -> int:
        return 2 if self.autocast or BYTES[self.weight_dtype] == 2 else 4


@dataclass(frozen=True)
class Terms:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    activations_checkpointed: int
    logits: int
    checkpointing: bool

    @property
    def total(self) -> int:
        used = self.activations_checkpointed if self.checkpointing else self.activations
        return self.weights + self.gradients + self.optimizer + used + self.logits


def estimate(arch: Arch, trains: Trains, setup: Setup, batch: int) -> Terms:
    seq = setup.seq + trains.virtual_tokens
    total = arch.total_params()
    param_bytes = BYTES[setup.weight_dtype] if trains.base_weights else 4  # adapters train in float32 (peft)
    weights = _weights(arch, trains, setup, total)
    gradients = trains.trainable * param_bytes
    states = 0 if setup.optim.startswith(("sgd", "adafactor")) else 2
    per_state = 1 if "8bit" in setup.optim else param_bytes
    optimizer = trains.trainable * states * per_state
    full, checkpointed = _activations(arch, trains, setup, seq, batch)
    return Terms(weights, gradients, optimizer, full, checkpointed, _logits(arch, setup, seq, batch),
                 setup.checkpointing)  # fmt: skip


def _weights(arch: Arch, trains: Trains, setup: Setup, total: int) -> int:
    if not setup.four_bit:  # adapters (and peft's trained copy of a classification head) are float32 beside the base
        return total * BYTES[setup.weight_dtype] + (0 if trains.base_weights else trains.trainable * 4)
    # bitsandbytes 4-bit: half a byte per weight plus a scale per block of 64 (a byte, and a float32 per 256
    # blocks, with double quantisation); everything else is float32 after peft's prepare_model_for_kbit_training.
    quantised = sum(lin.fan_in * lin.fan_out * lin.count for lin in arch.linears)
    scales = quantised / 64 * (1 + 4 / 256) if setup.double_quant else quantised / 64 * 4
    return int(quantised * 0.5 + scales) + (total - quantised) * 4 + trains.trainable * 4


def _logits(arch: Arch, setup: Setup, seq: int, batch: int) -> int:
    """Language-model heads: the logits, their float32 log-softmax (kept for the backward) and its gradient — of
    every position, or of one chunk of trained positions at a time under the chunked loss."""
    if setup.head == "seq_cls":
        return 0
    tokens = batch * (setup.target if setup.head == "seq2seq_lm" else seq)
    if setup.chunk:
        tokens = min(tokens, setup.chunk)
    return tokens * arch.vocab * (12 if setup.act_bytes == 4 else 14)


def _activations(arch: Arch, trains: Trains, setup: Setup, seq: int, batch: int) -> tuple[int, int]:
    """(every layer's saved tensors, the same with gradient checkpointing: each layer's input, one layer whole)."""
    cpu = setup.device == "cpu"
    width = setup.act_bytes
    if arch.family == "t5":
        target = setup.target or seq
        enc = _t5_encoder(arch, seq) * seq
        dec = _t5_decoder(arch, seq, target) * target
        outside = OUTSIDE_LAYERS["t5"] * arch.hidden * (seq + target) / 2
        full = (arch.layers * enc + arch.decoder_layers * dec + outside) * batch * width
        kept = (arch.layers * seq + arch.decoder_layers * target) * arch.hidden + max(enc, dec) + outside
        return int(full), int(kept * batch * width)
    layer = {"llama": _llama, "gpt2": _gpt2, "bert": _bert}[arch.family](arch, trains, seq, cpu)
    outside = OUTSIDE_LAYERS[arch.family] * arch.hidden
    tokens = batch * seq
    full = (arch.layers * layer + outside) * tokens * width
    kept = (arch.layers * arch.hidden + layer + outside) * tokens * width
    return int(full), int(kept)


def _adapters(trains: Trains, arch: Arch) -> float:
    """Per token per layer: each adapter's rank-wide intermediate, and its dropped input when lora_dropout > 0
    (the output and a mask: measured 1.46 input widths)."""
    per_layer = [lin for lin in trains.adapted if lin.count == arch.layers]
    extra = sum(trains.rank for _ in per_layer)
    if trains.dropout > 0:
        extra += 1.46 * sum(lin.fan_in for lin in per_layer)
    return extra


def _keeps(trains: Trains, *names: str) -> bool:
    """Whether the input of the linears `names` is kept: their weights train, or an adapter sits beside them."""
    return trains.all_weights or any(lin.name in names for lin in trains.adapted)


def _llama(arch: Arch, trains: Trains, seq: int, cpu: bool) -> float:
    h, q, kv, i, nh = arch.hidden, arch.q_dim, arch.kv_dim, arch.intermediate, arch.heads
    el = 2 * h + 2 * q + 2 * kv + 3 * i + nh + 2
    el += h if _keeps(trains, "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj") else 0
    el += h if _keeps(trains, "mlp.gate_proj", "mlp.up_proj") else 0
    el += i if _keeps(trains, "mlp.down_proj") else 0
    el += 2 * h if trains.all_weights else 0  # the normalised inputs the norm weights' gradients need
    if arch.attn_dropout and cpu:  # the math path's output is copied for o_proj, kept if o_proj needs its input
        el += 3 * nh * seq + (q if _keeps(trains, "self_attn.o_proj") else 0)
    return el + _adapters(trains, arch)


def _gpt2(arch: Arch, trains: Trains, seq: int, cpu: bool) -> float:
    h, i, nh = arch.hidden, arch.intermediate, arch.heads
    el = 9 * h + 4 * i + nh + 4
    el += h if _keeps(trains, "attn.c_proj") else 0
    el += i if _keeps(trains, "mlp.c_proj") else 0
    if arch.attn_dropout and cpu:  # the math path keeps no output of its own: only c_proj's copy, if needed
        el += 3 * nh * seq - nh - (0 if _keeps(trains, "attn.c_proj") else h)
    return el + _adapters(trains, arch)


def _bert(arch: Arch, trains: Trains, seq: int, cpu: bool) -> float:
    h, i, nh = arch.hidden, arch.intermediate, arch.heads
    el = 7 * h + i + nh + 4
    el += h if _keeps(trains, "attention.output.dense") else 0
    el += i if _keeps(trains, "output.dense") else 0
    if arch.hidden_dropout:
        el += 2 * h
    if arch.attn_dropout and cpu:  # as GPT-2's
        el += 3 * nh * seq - nh - (0 if _keeps(trains, "attention.output.dense") else h)
    return el + _adapters(trains, arch)


def _t5_encoder(arch: Arch, seq: int) -> float:
    """Per source token per encoder layer (T5's attention is eager: the attention maps are kept on any device)."""
    d, inner, ff, nh = arch.hidden, arch.q_dim, arch.intermediate, arch.heads
    gated = 6 * ff if arch.gated else 0
    if arch.hidden_dropout:
        return 8 * d + 4 * inner + 3 * ff + 3 * nh * seq + 2 + gated
    return 6 * d + 4 * inner + ff + nh * seq + 2 + gated


def _t5_decoder(arch: Arch, seq: int, target: int) -> float:
    """Per target token per decoder layer, including its share of the cross-attention keys and values."""
    d, inner, ff, nh = arch.hidden, arch.q_dim, arch.intermediate, arch.heads
    gated = 6 * ff if arch.gated else 0
    cross = 2 * inner * seq / target
    if arch.hidden_dropout:
        return 12 * d + 6 * inner + 3 * ff + 3 + 3 * nh * target + 3 * nh * seq + cross + gated
    return 9 * d + 6 * inner + ff + 7 + nh * target + cross + gated
