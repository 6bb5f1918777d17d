"""A model's layout from its config alone: every linear layer (what methods target), the other parameters, and the
shapes activations are made of. Torch-free; `tests/test_plan.py` checks the counts against the real models.

Supported: Llama-style decoders (llama, mistral, qwen2, qwen3, gemma, olmo2), GPT-2, BERT-style encoders (bert,
roberta, xlm-roberta, electra with embeddings as wide as the hidden size) and T5 / mT5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmkit.errors import RecipeError

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo2")
BERT_LIKE = ("bert", "roberta", "xlm-roberta", "electra")
SUPPORTED = (*LLAMA_LIKE, "gpt2", *BERT_LIKE, "t5", "mt5")


@dataclass(frozen=True)
class Linear:
    """One linear layer (repeated `count` times, once per layer); `name` is its dotted name below the layer, the
    last part of which is what `target_modules` matches. `stack` is encoder or decoder (T5), or '' elsewhere."""

    name: str
    fan_in: int
    fan_out: int
    bias: bool
    count: int
    stack: str = ""

    @property
    def params(self) -> int:
        return (self.fan_in * self.fan_out + (self.fan_out if self.bias else 0)) * self.count

    def matches(self, target: str) -> bool:
        return self.name == target or self.name.endswith("." + target)


@dataclass(frozen=True)
class Arch:
    family: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    linears: tuple[Linear, ...]  # the base model's, in every layer (not the task head)
    head: tuple[Linear, ...]  # the task head's (new for classification; the LM head when untied)
    other: int  # parameters outside linear layers: embeddings, norms, position tables
    other_biases: int  # of those, biases (LayerNorm), which BitFit trains
    decoder_layers: int = 0  # T5: decoder layers (layers counts the encoder's)
    attn_dropout: float = 0.0
    hidden_dropout: float = 0.0
    gated: bool = True  # a gated MLP (Llama, T5 v1.1): two input projections
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def total_params(self) -> int:
        return sum(lin.params for lin in (*self.linears, *self.head)) + self.other


def arch_of(config: dict[str, Any], head: str, num_labels: int = 2) -> Arch:
    model_type = config.get("model_type", "")
    if model_type in LLAMA_LIKE:
        return _llama(config, head, num_labels)
    if model_type == "gpt2":
        return _gpt2(config, head, num_labels)
    if model_type in BERT_LIKE:
        return _bert(config, head, num_labels)
    if model_type in ("t5", "mt5"):
        return _t5(config, head, num_labels)
    raise RecipeError(
        f"model.name: llmkit plan does not know the layout of model type '{model_type}' yet; it knows "
        f"{', '.join(SUPPORTED)}."
    )


def _llama(c: dict[str, Any], head: str, num_labels: int) -> Arch:
    h, n, i, v = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
    heads = c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads") or heads
    hd = c.get("head_dim") or h // heads
    qkv_bias = bool(c.get("attention_bias")) or c["model_type"] == "qwen2"
    mlp_bias = bool(c.get("mlp_bias"))
    linears = (
        Linear("self_attn.q_proj", h, heads * hd, qkv_bias, n),
        Linear("self_attn.k_proj", h, kv_heads * hd, qkv_bias, n),
        Linear("self_attn.v_proj", h, kv_heads * hd, qkv_bias, n),
        Linear("self_attn.o_proj", heads * hd, h, bool(c.get("attention_bias")), n),
        Linear("mlp.gate_proj", h, i, mlp_bias, n),
        Linear("mlp.up_proj", h, i, mlp_bias, n),
        Linear("mlp.down_proj", i, h, mlp_bias, n),
    )
    norms = {"qwen3": 2 * hd, "olmo2": heads * hd + kv_heads * hd}.get(c["model_type"], 0)  # q/k norms
    tied = c.get("tie_word_embeddings", c["model_type"] == "gemma")
    other = v * h + n * (2 * h + norms) + h
    heads_ = (Linear("score", h, num_labels, False, 1),) if head == "seq_cls" else ()
    if head == "causal_lm" and not tied:
        heads_ = (Linear("lm_head", h, v, False, 1),)
    dropout = float(c.get("attention_dropout") or 0.0)
    return Arch("llama", c["model_type"], h, n, heads, kv_heads, hd, i, v, tied, linears, heads_, other, 0,
                attn_dropout=dropout)  # fmt: skip


def _gpt2(c: dict[str, Any], head: str, num_labels: int) -> Arch:
    h, n, v = c.get("n_embd", 768), c.get("n_layer", 12), c.get("vocab_size", 50257)
    i = c.get("n_inner") or 4 * h
    linears = (
        Linear("attn.c_attn", h, 3 * h, True, n),
        Linear("attn.c_proj", h, h, True, n),
        Linear("mlp.c_fc", h, i, True, n),
        Linear("mlp.c_proj", i, h, True, n),
    )
    positions = c.get("n_positions", 1024)
    layer_norm_biases = n * 2 * h + h
    other = v * h + positions * h + n * 4 * h + 2 * h
    heads_ = (Linear("score", h, num_labels, False, 1),) if head == "seq_cls" else ()
    heads = c.get("n_head", 12)
    return Arch("gpt2", "gpt2", h, n, heads, heads, h // heads, i, v, True, linears, heads_, other, layer_norm_biases,
                attn_dropout=float(c.get("attn_pdrop", 0.1)), hidden_dropout=float(c.get("resid_pdrop", 0.1)),
                gated=False)  # fmt: skip


def _bert(c: dict[str, Any], head: str, num_labels: int) -> Arch:
    h, n, i, v = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
    if c.get("embedding_size", h) != h:
        raise RecipeError("model.name: llmkit plan does not know ELECTRA models with a narrow embedding yet.")
    linears = (
        Linear("attention.self.query", h, h, True, n),
        Linear("attention.self.key", h, h, True, n),
        Linear("attention.self.value", h, h, True, n),
        Linear("attention.output.dense", h, h, True, n),
        Linear("intermediate.dense", h, i, True, n),
        Linear("output.dense", i, h, True, n),
    )
    positions, types = c.get("max_position_embeddings", 512), c.get("type_vocab_size", 2)
    layer_norm_biases = h + n * 2 * h
    other = (v + positions + types) * h + 2 * h + n * 4 * h
    heads_: tuple[Linear, ...] = ()
    if head == "seq_cls":
        pooler = (
            () if c["model_type"] in ("roberta", "xlm-roberta", "electra") else (Linear("pooler.dense", h, h, True, 1),)
        )
        heads_ = (*pooler, Linear("classifier", h, num_labels, True, 1))
        if c["model_type"] in ("roberta", "xlm-roberta", "electra"):
            heads_ = (Linear("classifier.dense", h, h, True, 1), Linear("classifier.out_proj", h, num_labels, True, 1))
    heads = c["num_attention_heads"]
    return Arch("bert", c["model_type"], h, n, heads, heads, h // heads, i, v, True, linears, heads_, other,
                layer_norm_biases, attn_dropout=float(c.get("attention_probs_dropout_prob", 0.1)),
                hidden_dropout=float(c.get("hidden_dropout_prob", 0.1)), gated=False)  # fmt: skip


def _t5(c: dict[str, Any], head: str, num_labels: int) -> Arch:
    d, ff, v = c.get("d_model", 512), c.get("d_ff", 2048), c.get("vocab_size", 32128)
    heads, d_kv = c.get("num_heads", 8), c.get("d_kv", 64)
    enc = c.get("num_layers", 6)
    dec = c.get("num_decoder_layers") or enc
    gated = str(c.get("feed_forward_proj", "relu")).startswith("gated")
    inner = heads * d_kv

    def stack(name: str, n: int, cross: bool) -> tuple[Linear, ...]:
        attention = [Linear(f"layer.0.SelfAttention.{p}", d, inner, False, n, name) for p in ("q", "k", "v")]
        attention.append(Linear("layer.0.SelfAttention.o", inner, d, False, n, name))
        if cross:
            attention += [Linear(f"layer.1.EncDecAttention.{p}", d, inner, False, n, name) for p in ("q", "k", "v")]
            attention.append(Linear("layer.1.EncDecAttention.o", inner, d, False, n, name))
        ff_layer = "layer.2" if cross else "layer.1"
        wi = [f"{ff_layer}.DenseReluDense.wi_0", f"{ff_layer}.DenseReluDense.wi_1"] if gated else [
            f"{ff_layer}.DenseReluDense.wi"]  # fmt: skip
        mlp = [Linear(w, d, ff, False, n, name) for w in wi] + [
            Linear(f"{ff_layer}.DenseReluDense.wo", ff, d, False, n, name)
        ]
        return (*attention, *mlp)

    buckets = c.get("relative_attention_num_buckets", 32)
    other = v * d + enc * 2 * d + d + dec * 3 * d + d + buckets * heads * 2
    tied = c.get("tie_word_embeddings", True)
    heads_: tuple[Linear, ...] = ()
    if head == "seq2seq_lm" and not tied:
        heads_ = (Linear("lm_head", d, v, False, 1),)
    if head == "seq_cls":
        heads_ = (Linear("classification_head.dense", d, d, True, 1),
                  Linear("classification_head.out_proj", d, num_labels, True, 1))  # fmt: skip
    return Arch("t5", c["model_type"], d, enc, heads, heads, d_kv, ff, v, tied, (*stack("encoder", enc, False),
                *stack("decoder", dec, True)), heads_, other, 0, decoder_layers=dec,
                attn_dropout=float(c.get("dropout_rate", 0.1)), hidden_dropout=float(c.get("dropout_rate", 0.1)),
                gated=gated)  # fmt: skip
