"""Completion-only loss: labels are -100 exactly on prompt tokens; the response and the stop token are trained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmkit import DataError, RecipeError
from llmkit.data.collate import Collator
from llmkit.data.packing import pack
from llmkit.data.sft import ALPACA_RESPONSE, CHATML_TEMPLATE, build_examples
from llmkit.data.tokens import IGNORE_INDEX as IGNORE
from llmkit.data.tokens import LengthPolicy
from llmkit.testing import tiny_model, tiny_tokenizer

ROW = {"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."}


def _build(rows, tok, fmt="alpaca", template="alpaca", max_length=256, overlong="drop", stop_ids=None, system=None):
    stop = {tok.eos_token_id} if stop_ids is None else stop_ids
    return build_examples(
        rows,
        [f"row{i}" for i in range(len(rows))],
        fmt=fmt,
        tokenizer=tok,
        template=template,
        system_prompt=system,
        policy=LengthPolicy(max_length, overlong),
        stop_ids=stop,
    )


def test_alpaca_prompt_masked_response_and_eos_trained():
    tok = tiny_tokenizer("gpt2")
    (ex,), _, stats = _build([ROW], tok)
    ids, labels = ex["input_ids"].tolist(), ex["labels"].tolist()
    response = tok(ROW["output"], add_special_tokens=False)["input_ids"]
    n_prompt = len(ids) - len(response) - 1
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == [*response, tok.eos_token_id]
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[:n_prompt]).endswith(ALPACA_RESPONSE)
    assert stats.target_tokens == len(response) + 1


def test_eos_label_survives_padding_when_pad_is_eos():
    tok = tiny_tokenizer("gpt2")
    tok.pad_token = tok.eos_token  # what llmkit does for GPT-2: the case where naive masking drops EOS
    examples, _, _ = _build([ROW, {**ROW, "output": "A much longer answer about colours and light."}], tok)
    batch = Collator(tok.pad_token_id)(examples)
    short = batch["labels"][0]
    n = len(examples[0]["input_ids"])
    assert short[n - 1].item() == tok.eos_token_id, "EOS label kept"
    assert (short[n:] == IGNORE).all(), "padding masked by position"
    assert batch["attention_mask"][0, :n].all() and not batch["attention_mask"][0, n:].any()


def test_chat_multi_turn_trains_every_assistant_turn_only():
    tok = tiny_tokenizer("llama")
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye"},
    ]
    (ex,), _, _ = _build([{"messages": messages}], tok, fmt="chat")
    ids, labels = ex["input_ids"].tolist(), ex["labels"].tolist()
    assert ids[0] == tok.bos_token_id and labels[0] == IGNORE
    trained = [t for t, label in zip(ids, labels, strict=False) if label != IGNORE]
    assert tok.decode(trained) == "Hello there<|im_end|>\nGoodbye<|im_end|>\n"
    masked = tok.decode([t for t, label in zip(ids, labels, strict=False) if label == IGNORE])
    assert "Hi" in masked and "Bye" in masked and "Hello" not in masked
    assert ids.count(tok.eos_token_id) == 4 and sum(1 for t in trained if t == tok.eos_token_id) == 2


def test_alpaca_rows_with_chat_template_and_system_prompt():
    tok = tiny_tokenizer("llama")
    (ex,), _, _ = _build([ROW], tok, template="auto", system="Be brief.")
    text = tok.decode(ex["input_ids"])
    assert text.startswith("<s><|im_start|>system\nBe brief.<|im_end|>")
    trained = [t for t, label in zip(ex["input_ids"], ex["labels"], strict=False) if label != IGNORE]
    assert tok.decode(trained) == "Blue is a colour.<|im_end|>\n"


def test_stop_token_never_trained_is_a_recipe_error():
    tok = tiny_tokenizer("llama")
    tok.chat_template = CHATML_TEMPLATE.replace("<|im_end|>", "<|endoftext|>")  # turns end with a non-stop token
    with pytest.raises(RecipeError, match="stop token \\('<\\|im_end\\|>'\\) is never a training target"):
        _build([ROW], tok, fmt="alpaca", template="chat")


def test_overlong_policies():
    tok = tiny_tokenizer("gpt2")
    long_row = {**ROW, "output": "word " * 100}
    assert len(_build([ROW], tok)[0][0]["input_ids"]) < 100
    kept, _, stats = _build([ROW, long_row], tok, max_length=100, overlong="drop")
    assert len(kept) == 1 and stats.dropped_overlong == 1
    cut, _, stats = _build([ROW, long_row], tok, max_length=100, overlong="truncate")
    assert [len(e["input_ids"]) for e in cut][1] == 100 and stats.truncated == 1
    with pytest.raises(DataError, match=r"row1: is .* tokens, longer than data.max_length=100"):
        _build([ROW, long_row], tok, max_length=100, overlong="error")
    pieces, _, _ = _build([{"text": "word " * 100}], tok, fmt="text", max_length=40, overlong="split")
    assert len(pieces) > 2 and all(len(p["input_ids"]) <= 40 for p in pieces)


def test_truncation_that_leaves_no_target_drops_the_row():
    tok = tiny_tokenizer("gpt2")
    row = {"instruction": "word " * 60, "input": "", "output": "x"}
    kept, _, stats = _build([row], tok, max_length=60, overlong="truncate")
    assert kept == [] and stats.dropped_no_target == 1


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_packed_loss_equals_unpacked_loss(family):
    """Packing must not let examples attend to each other or predict across boundaries."""
    tok = tiny_tokenizer(family)
    rows = [{**ROW, "output": f"Answer number {i} is {'long ' * i}"} for i in range(6)]
    examples, _, _ = _build(rows, tok, template="alpaca")
    model = tiny_model(family).eval()

    def loss_sum(batch):
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE, reduction="sum"
        )

    collate = Collator(tok.eos_token_id)
    with torch.no_grad():
        unpacked = sum(loss_sum(collate([ex])) for ex in examples)
        rows_packed = pack(examples, max_length=256)
        assert len(rows_packed) < len(examples)
        packed = sum(loss_sum(collate([row])) for row in rows_packed)
        batched = loss_sum(collate(rows_packed))
    assert torch.allclose(unpacked, packed, rtol=1e-4), (unpacked, packed)
    assert torch.allclose(unpacked, batched, rtol=1e-4), (unpacked, batched)


def test_pack_respects_max_length_and_keeps_every_token():
    examples = [{"input_ids": np.arange(n), "labels": np.arange(n)} for n in (50, 40, 30, 20, 10, 60)]
    rows = pack(examples, max_length=64)
    assert all(len(r["input_ids"]) <= 64 for r in rows)
    assert sum(len(r["input_ids"]) for r in rows) == 210
    assert sum(int((r["position_ids"] == 0).sum()) for r in rows) == len(examples)
