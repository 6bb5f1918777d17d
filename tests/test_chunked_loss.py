"""The chunked loss equals the model's own: same loss and same gradients to 1e-5, on every family with an LM head,
under LoRA and full fine-tuning, with packing and prompt tuning; and it never builds the full logits."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED_DATA, sft_recipe
from peft import AdaLoraConfig, LoraConfig, PromptTuningConfig, get_peft_model

import llmkit
from llmkit import Recipe
from llmkit.chunked import (
    HeadInput,
    causal_lm_loss,
    cross_entropy_sums,
    head_loss,
    output_head,
    seq2seq_loss,
    token_log_probs,
    unsupported,
)
from llmkit.data.tokens import IGNORE_INDEX
from llmkit.families import chunk_tokens
from llmkit.testing import save_tiny, tiny_model

SPAM = SHARED_DATA / "sms-spam-collection.tsv"
TOL = dict(rtol=1e-5, atol=1e-6)


def _batch(vocab: int, rows: int = 3, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (rows, length), generator=g)
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX  # a prompt
    labels[1, 9:] = IGNORE_INDEX  # a padded row
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _reference(model, batch, count):
    """The model's own loss (transformers' ForCausalLM / T5 loss), as a sum over the trained tokens / count."""
    model.zero_grad()
    out = model(**batch, num_items_in_batch=count) if count is not None else model(**batch)
    out.loss.backward()
    return out.loss.detach(), _grads(model)


def _chunked(model, batch, count, chunk, causal=True):
    model.zero_grad()
    capture = HeadInput(output_head(model))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with capture.capturing():
        out = model(**inputs)
    assert out.logits.shape[-2] == 0  # the head computed no position
    loss_fn = causal_lm_loss(capture, chunk) if causal else seq2seq_loss(capture, chunk)
    loss = loss_fn(out, batch["labels"], num_items_in_batch=count)
    loss.backward()
    return loss.detach(), _grads(model)


def _assert_same(reference, chunked):
    (loss_a, grads_a), (loss_b, grads_b) = reference, chunked
    torch.testing.assert_close(loss_b, loss_a, **TOL)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], **TOL, msg=name)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("chunk", [5, 64])
def test_causal_full_fine_tuning_matches_the_models_loss(family, chunk):
    model = tiny_model(family).float()
    batch = _batch(model.config.vocab_size)
    _assert_same(_reference(model, batch, None), _chunked(model, batch, None, chunk))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_causal_lora_with_an_accumulated_count(family):
    """num_items_in_batch from the whole accumulated batch divides the sum, as transformers' loss does."""
    model = get_peft_model(tiny_model(family).float(), LoraConfig(r=4, target_modules="all-linear"))
    batch = _batch(model.config.vocab_size)
    count = torch.tensor(50)
    _assert_same(_reference(model, batch, count), _chunked(model, batch, count, chunk=7))


def test_lora_on_the_head_itself_gets_its_gradients():
    model = get_peft_model(tiny_model("llama").float(), LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))
    batch = _batch(model.config.vocab_size)
    reference, chunked = _reference(model, batch, None), _chunked(model, batch, None, chunk=4)
    assert any("lm_head.lora" in name for name in chunked[1])
    _assert_same(reference, chunked)


def test_packed_rows_match():
    """Packed rows: position_ids restart per example and no attention mask; the first label of each is masked."""
    model = tiny_model("llama").float()
    batch = _batch(model.config.vocab_size, rows=2, length=16)
    del batch["attention_mask"]
    batch["position_ids"] = torch.tensor([list(range(6)) + list(range(10))] * 2)
    batch["labels"][:, 6] = IGNORE_INDEX
    _assert_same(_reference(model, batch, None), _chunked(model, batch, None, chunk=3))


def test_prompt_tuning_virtual_tokens_are_not_scored():
    """Prompt tuning prepends virtual tokens to the hidden states; only the inputs' positions are scored."""
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    model = get_peft_model(tiny_model("llama").float(), config)
    batch = _batch(model.config.vocab_size)
    _assert_same(_reference(model, batch, None), _chunked(model, batch, None, chunk=8))


def test_t5_matches_its_own_loss():
    """T5 scales the decoder's hidden states before the head; the hook sees them scaled."""
    model = tiny_model("t5", head="seq2seq_lm").float()
    batch = _batch(model.config.vocab_size)
    batch["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
    reference = _reference(model, batch, None)
    _assert_same(reference, _chunked(model, batch, None, chunk=5, causal=False))


def test_without_gradients_the_chunks_are_summed():
    model = tiny_model("gpt2").float().eval()
    batch = _batch(model.config.vocab_size)
    with torch.no_grad():
        expected = model(**batch).loss
        capture = HeadInput(output_head(model))
        with capture.capturing():
            out = model(**{k: v for k, v in batch.items() if k != "labels"})
        loss = causal_lm_loss(capture, 4)(out, batch["labels"])
    torch.testing.assert_close(loss, expected, **TOL)


def test_grouped_sums_weigh_each_group_and_report_plain_sums():
    """Rationale distillation weighs label and rationale tokens by their own counts; the statistics stay plain."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11)
    hidden = torch.randn(10, 8, requires_grad=True)
    targets = torch.randint(0, 11, (10,))
    first = torch.arange(10) < 4
    groups = [(first, 0.25), (~first, 0.5)]
    loss, stats = head_loss(hidden, head, cross_entropy_sums(targets, groups), chunk=3)
    per_token = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="none")
    torch.testing.assert_close(loss, 0.25 * per_token[first].sum() + 0.5 * per_token[~first].sum(), **TOL)
    torch.testing.assert_close(stats, torch.stack([per_token[first].sum(), per_token[~first].sum()]).detach(), **TOL)
    (g_chunked,) = torch.autograd.grad(loss * 3.0, hidden)  # backward scales the stored gradient
    expected = 3.0 * (0.25 * per_token[first].sum() + 0.5 * per_token[~first].sum())
    (g_full,) = torch.autograd.grad(expected, hidden)
    torch.testing.assert_close(g_chunked, g_full, **TOL)


def test_the_head_is_untouched_when_not_capturing():
    """Generation after training needs real logits: the hook only acts inside `capturing()`."""
    model = tiny_model("gpt2").float()
    HeadInput(output_head(model))
    ids = torch.tensor([[5, 6, 7]])
    assert model(input_ids=ids).logits.shape == (1, 3, model.config.vocab_size)


def test_chunk_size_holds_64_mb_of_logits():
    assert chunk_tokens(49_152) == 256  # SmolLM2
    assert chunk_tokens(32_000) == 512
    assert chunk_tokens(128_256) == 128
    assert chunk_tokens(100) == 4096


def test_where_it_is_not_exact_it_says_why():
    assert unsupported(tiny_model("gpt2")) is None
    assert "FSDP" in unsupported(tiny_model("gpt2"), sharded=True)
    assert "model type 'bert'" in unsupported(tiny_model("bert", head="seq_cls"))
    adalora = get_peft_model(tiny_model("llama"), AdaLoraConfig(target_modules=["q_proj"], total_step=10))
    assert "orthogonal regularisation" in unsupported(adalora)


# ---------------------------------------------------------------- whole runs: chunked and not give the same run


def _both_ways(recipe: dict, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """Train `recipe` with the chunked loss and with the model's own; returns both RunResults. Plain SGD, so the
    weights compare: Adam divides each gradient by its own size, turning a 1e-9 rounding difference in a near-zero
    gradient into a whole learning-rate step."""
    from llmkit import chunked

    calls = []
    real = chunked.head_loss
    monkeypatch.setattr(chunked, "head_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    runs = []
    for on in (True, False):
        r = json.loads(json.dumps(recipe))
        r["output_dir"] = f"{recipe['output_dir']}-{on}"
        r["training"].update(chunked_loss=on, optim="sgd")
        runs.append(llmkit.Trainer(Recipe.from_dict(r)).train())
        assert bool(calls) == on, "the chunked loss ran exactly when it was on"
        calls.clear()
    return tuple(runs)


def _assert_same_run(chunked_run, plain_run, keys, rtol=1e-5):
    for key in keys:
        assert chunked_run.metrics[key] == pytest.approx(plain_run.metrics[key], rel=rtol), key
    a, b = chunked_run.model.state_dict(), plain_run.model.state_dict()
    trained = [n for n, p in chunked_run.model.named_parameters() if p.requires_grad]
    assert trained
    for name in trained:
        key = name if name in a else name.replace(".default", "")
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=name)


SFT_KEYS = ("eval_loss_before", "eval_loss", "train_loss")


@pytest.mark.e2e
def test_a_packed_lora_run_with_accumulation_is_the_same_run(tiny_dirs, instructions_small, tmp_path, monkeypatch):
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["data"]["packing"] = True
    recipe["training"].update(max_steps=4, gradient_accumulation_steps=2, per_device_train_batch_size=2)
    _assert_same_run(*_both_ways(recipe, monkeypatch), SFT_KEYS)


@pytest.mark.e2e
def test_a_full_gpt2_run_is_the_same_run(tiny_dirs, instructions_small, tmp_path, monkeypatch):
    recipe = sft_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path / "run", method="full")
    recipe["training"].update(max_steps=4, gradient_accumulation_steps=2, learning_rate=1e-3)
    _assert_same_run(*_both_ways(recipe, monkeypatch), SFT_KEYS)


@pytest.mark.e2e
def test_a_t5_seq2seq_run_is_the_same_run(tiny_dirs, tmp_path, monkeypatch):
    from toy import copy_rows, seq2seq_recipe, write_splits

    splits = write_splits(tmp_path / "data", copy_rows, sizes=(32, 8, 8))
    recipe = seq2seq_recipe(tiny_dirs["t5"], splits, tmp_path / "run")
    recipe["training"].update(max_steps=4, gradient_accumulation_steps=2)
    _assert_same_run(*_both_ways(recipe, monkeypatch), ("eval_loss_before", "eval_loss", "train_loss"))


@pytest.mark.e2e
def test_a_distillation_run_with_a_live_teacher_is_the_same_run(tiny_dirs, instructions_small, tmp_path, monkeypatch):
    student = save_tiny("llama", tmp_path / "student", seed=1, num_hidden_layers=1)
    recipe = sft_recipe(student, instructions_small, tmp_path / "run", method="full")
    recipe["task"] = "distill"
    recipe["distill"] = {"teacher": str(tiny_dirs["llama"]), "alpha": 0.5, "temperature": 2.0}
    recipe["data"].update(max_length=128, max_train_samples=16, max_eval_samples=8)
    recipe["training"].update(max_steps=3, gradient_accumulation_steps=2, learning_rate=5e-3)
    keys = ("eval_loss_before", "eval_kl_before", "eval_ce", "eval_kl", "eval_loss", "train_loss")
    _assert_same_run(*_both_ways(recipe, monkeypatch), keys)


@pytest.mark.e2e
@pytest.mark.parametrize("family", ["llama", "t5"])
def test_a_rationale_distillation_run_is_the_same_run(family, tiny_dirs, tmp_path, monkeypatch):
    why = {"spam": "It offers a prize.", "ham": "It is a note to a friend."}
    lines = SPAM.read_text().splitlines()[1:25]
    rows = [{"input": t[:60], "label": lab, "rationale": why[lab]} for lab, t in (x.split("\t", 1) for x in lines)]
    data = tmp_path / "rationales.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "task": "distill",
        "model": {"name": str(tiny_dirs[family])},
        "data": {"train": str(data), "format": "rationale", "max_length": 128, "validation_split": 0.25},
        "method": "full",
        "distill": {"rationale_weight": 0.5},
        "training": {"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 5e-3, "seed": 0,
                     "save_strategy": "no", "gradient_accumulation_steps": 2},
        "output_dir": str(tmp_path / "run"),
    }  # fmt: skip
    if family == "t5":
        recipe["data"]["max_target_length"] = 24
    keys = ("eval_label_loss", "eval_rationale_loss", "eval_loss", "train_loss")
    _assert_same_run(*_both_ways(recipe, monkeypatch), keys)


def test_token_log_probs_and_their_gradients_match_the_full_logits():
    """ORPO's per-token log-probabilities: the same values and gradients as log_softmax over the full logits."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11)
    hidden = torch.randn(10, 8, requires_grad=True)
    targets = torch.randint(0, 11, (10,))
    weights = torch.randn(10)
    log_probs, means = token_log_probs(hidden, head, targets, chunk=3)
    logits = head(hidden)
    expected = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(log_probs, expected, **TOL)
    torch.testing.assert_close(means, logits.mean(-1).detach(), **TOL)
    got = torch.autograd.grad((log_probs * weights).sum(), [hidden, head.weight, head.bias])
    want = torch.autograd.grad((expected * weights).sum(), [hidden, head.weight, head.bias])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.e2e
def test_an_orpo_run_is_the_same_run(tiny_dirs, preferences_small, tmp_path, monkeypatch):
    recipe = {
        "task": "orpo",
        "model": {"name": str(tiny_dirs["llama"])},
        "data": {"train": str(preferences_small), "validation": str(preferences_small),
                 "format": "alpaca_preference", "max_length": 96, "max_train_samples": 16, "max_eval_samples": 8},
        "method": "full",
        "training": {"max_steps": 3, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
                     "learning_rate": 1e-3, "save_strategy": "no", "seed": 0},
        "output_dir": str(tmp_path / "run"),
    }  # fmt: skip
    from llmkit import chunked

    calls = []
    real = chunked.token_log_probs
    monkeypatch.setattr(chunked, "token_log_probs", lambda *a, **k: calls.append(1) or real(*a, **k))
    keys = ("eval_loss_before", "eval_loss", "train_loss", "eval_nll_loss", "eval_log_odds_ratio")
    runs = []
    for on in (True, False):
        r = json.loads(json.dumps(recipe))
        r["output_dir"] += f"-{on}"
        r["training"].update(chunked_loss=on, optim="sgd")
        runs.append(llmkit.Trainer(Recipe.from_dict(r)).train())
        assert bool(calls) == on
        calls.clear()
    _assert_same_run(*runs, keys)


def test_the_recipe_key_and_liger_decide_whether_it_runs():
    from types import SimpleNamespace

    from llmkit.chunked import enabled

    trainer = SimpleNamespace(args=SimpleNamespace(use_liger_kernel=False, fsdp=[], deepspeed=None))
    model = tiny_model("gpt2")
    assert enabled(trainer, model, True) and not enabled(trainer, model, False)
    trainer.args.use_liger_kernel = True  # Liger's fused linear cross-entropy does it on the GPU
    assert not enabled(trainer, model, True)
    trainer.args.use_liger_kernel, trainer.args.fsdp = False, ["full_shard"]
    assert not enabled(trainer, model, True)


def test_a_task_reason_turns_it_off():
    """ORPO on an encoder-decoder keeps TRL's forward, and the run says so instead of claiming the chunked loss."""
    from types import SimpleNamespace

    from llmkit.chunked import enabled
    from llmkit.chunked_orpo import unsupported as orpo_unsupported

    trainer = SimpleNamespace(args=SimpleNamespace(use_liger_kernel=False, fsdp=[], deepspeed=None))
    orpo = SimpleNamespace(is_encoder_decoder=True, aux_loss_enabled=False)
    assert "decoder-only" in orpo_unsupported(orpo)
    assert not enabled(trainer, tiny_model("gpt2"), True, orpo_unsupported(orpo))
    orpo.is_encoder_decoder = False
    assert orpo_unsupported(orpo) is None and enabled(trainer, tiny_model("gpt2"), True, None)
