"""Tiny random-init models of every family, with a small BPE tokenizer trained on the repo's own data.

Used by the tests and the benchmark: no hub, a few hundred thousand parameters, seconds per training run.
Each family's tokenizer mimics the real one where it matters: GPT-2 and Llama have no pad token, GPT-2 has no chat
template, BERT wraps inputs in [CLS] … [SEP], T5 appends </s>.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "instruction-data.json"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "[CLS]", "[SEP]", "[MASK]", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 600

# Shapes small enough for a CPU test to train in seconds, large enough to learn a toy task. Dropout is off so that
# invariance tests (accumulation, resume) compare runs that differ only in what they claim to differ in.
TINY = {
    "llama": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    ),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=512, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "bert": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    ),
    "t5": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, dropout_rate=0.0),
}
CONFIGS = {
    "llama": transformers.LlamaConfig,
    "gpt2": transformers.GPT2Config,
    "bert": transformers.BertConfig,
    "t5": transformers.T5Config,
}


@lru_cache(maxsize=1)
def _bpe_json() -> str:
    """Byte-level BPE trained on the repo's instruction data; deterministic for a given `tokenizers` version."""
    rows = json.loads(CORPUS.read_text())
    texts = [" ".join(filter(None, (r["instruction"], r["input"], r["output"]))) for r in rows]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(family: str) -> PreTrainedTokenizerFast:
    tok = Tokenizer.from_str(_bpe_json())
    if family == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
        )
        specials = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="<pad>", unk_token="<unk>", mask_token="[MASK]")
    elif family == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
        )
        specials = dict(eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    elif family == "gpt2":
        specials = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    elif family == "llama":
        # Like SmolLM2-Instruct: ChatML turns, and the end-of-turn marker is the EOS. No pad token.
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        specials = dict(bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>")
    else:
        raise ValueError(f"unknown family {family!r}")
    out = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    if family == "llama":
        from llmkit.data.sft import CHATML_TEMPLATE

        out.chat_template = CHATML_TEMPLATE
    return out


def gpt2_tokenizer(
    directory: str | Path = REPO.parent / "shared" / "data" / "gpt2-tokenizer",
) -> PreTrainedTokenizerFast:
    """The real GPT-2 tokenizer (50,257 tokens) from its original `encoder.json` + `vocab.bpe` files.

    Built with `tokenizers` directly: in transformers 5, `GPT2TokenizerFast(vocab_file=..., merges_file=...)`
    silently yields a one-token vocabulary.
    """
    directory = Path(directory)
    bpe = models.BPE.from_file(str(directory / "encoder.json"), str(directory / "vocab.bpe"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, unk_token=eos)


def tiny_config(family: str, tokenizer: PreTrainedTokenizerFast | None = None, **overrides: Any) -> Any:
    tokenizer = tokenizer or tiny_tokenizer(family)
    ids: dict[str, Any] = {"vocab_size": len(tokenizer)}
    if family in ("llama", "gpt2"):
        ids.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if family == "t5":
        ids.update(
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    if family == "bert":
        ids.update(pad_token_id=tokenizer.pad_token_id)
    return CONFIGS[family](**{**TINY[family], **ids, **overrides})


def tiny_model(family: str, head: str = "causal_lm", seed: int = 0, **config_overrides: Any) -> Any:
    """A randomly initialised model; `head` is causal_lm, seq_cls or seq2seq_lm (or 'base' for no head)."""
    torch.manual_seed(seed)
    config = tiny_config(family, **config_overrides)
    auto = {
        "causal_lm": transformers.AutoModelForCausalLM,
        "seq_cls": transformers.AutoModelForSequenceClassification,
        "seq2seq_lm": transformers.AutoModelForSeq2SeqLM,
        "base": transformers.AutoModel,
    }[head]
    return auto.from_config(config)


# What a hub checkpoint of each family holds: decoders and T5 with their LM head, BERT as a bare encoder.
CHECKPOINT_HEAD = {"llama": "causal_lm", "gpt2": "causal_lm", "t5": "seq2seq_lm", "bert": "base"}


def save_tiny(family: str, directory: str | Path, seed: int = 0, **config_overrides: Any) -> Path:
    """Write a tiny model and its tokenizer where a recipe's `model.name` can point."""
    directory = Path(directory)
    tiny_model(family, CHECKPOINT_HEAD[family], seed=seed, **config_overrides).save_pretrained(directory)
    tiny_tokenizer(family).save_pretrained(directory)
    return directory
