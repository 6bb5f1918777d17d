"""QLoRA: a 4-bit base under LoRA stays correct through evaluation passes, and keeps new heads in full precision.

The hazard (bitsandbytes 0.50 on CPUs with avx512-bf16): the first no-grad forward in eval mode repacks each 4-bit
weight for an inference kernel that has no backward, after which LoRA gradients are silently wrong. The model here
is 64 wide because bitsandbytes repacks only layers at least one quantisation block (64 values) wide.
"""

from __future__ import annotations

import os

import pytest
import torch
from methods_harness import Case, batch, method

from llmkit.methods.qlora import keep_4bit_training_layout
from llmkit.testing import save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("llama64"), hidden_size=64, intermediate_size=128)


def _lora_grads_after_eval_pass(case: Case, model) -> tuple[dict, dict]:
    """LoRA gradients of `model` (4-bit) after an eval pass, and of the same LoRA on the dequantised base."""
    import peft

    reference = case.load_base().dequantize()
    reference = peft.get_peft_model(reference, case.method.upstream_config(case.ctx()))
    torch.manual_seed(1)
    with torch.no_grad():  # non-zero B, so every LoRA matrix gets a gradient; the same values in both models
        for (name, p), (ref_name, q) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
            assert name == ref_name
            if p.requires_grad:
                p.normal_(0, 0.1)
                q.copy_(p)
    data = batch(case)
    model.eval()
    with torch.no_grad():
        model(**data)  # the evaluation pass that used to break training
    model.train()
    reference.train()
    model(**data).loss.backward()
    reference(**data).loss.backward()
    got = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    want = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}
    return got, want


def _qlora_case(wide_llama) -> Case:
    return Case(
        method("qlora", r=4, lora_dropout=0.0, target_modules="all-linear", bnb_4bit_compute_dtype="float32"),
        wide_llama,
        "causal_lm",
    )


def test_lora_gradients_on_4bit_match_the_dequantised_model_after_an_eval_pass(wide_llama):
    case = _qlora_case(wide_llama)
    model = case.applied()
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 14, "every projection is 4-bit"
    got, want = _lora_grads_after_eval_pass(case, model)
    assert len(got) == 28 and got.keys() == want.keys()
    for name in got:
        assert got[name] is not None, f"{name} lost its gradient"
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.skipif(not bnb.functional.has_avx512bf16(), reason="the repack happens only on CPUs with avx512-bf16")
def test_without_the_workaround_bitsandbytes_breaks_training_after_an_eval_pass(wide_llama):
    """Why keep_4bit_training_layout exists. If this starts failing, bitsandbytes fixed the repack and the workaround
    in llmkit/methods/qlora.py can go."""
    import peft

    case = _qlora_case(wide_llama)
    base = case.load_base()
    model = peft.get_peft_model(
        peft.prepare_model_for_kbit_training(base, False), case.method.upstream_config(case.ctx())
    )
    got, want = _lora_grads_after_eval_pass(case, model)
    errors = [float("inf") if got[n] is None else ((got[n] - want[n]).norm() / want[n].norm()).item() for n in got]
    assert max(errors) > 0.1, "bitsandbytes no longer repacks 4-bit weights destructively"


def test_the_workaround_only_switches_off_the_repack(wide_llama):
    case = _qlora_case(wide_llama)
    base = case.load_base()
    layers = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    keep_4bit_training_layout(base)
    base.eval()
    with torch.no_grad():
        base(**{k: v for k, v in batch(case).items() if k != "labels"})
    assert all(not getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)


@pytest.mark.parametrize("family", ["bert", "llama", "t5"])
def test_a_new_classification_head_stays_full_precision_and_trains(family, tiny_dirs):
    case = Case(method("qlora", r=4), tiny_dirs[family], "seq_cls")
    model = case.applied()
    head = {
        n: p for n, p in model.named_parameters() if any(h in n for h in ("classifier", "score", "classification_head"))
    }
    trainable_head = {n for n, p in head.items() if p.requires_grad}
    assert trainable_head, "the head does not train"
    assert all(head[n].dtype == torch.float32 for n in trainable_head)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) > 0


def test_parameter_counts_count_4bit_values_not_bytes(tiny_dirs):
    from llmkit.models import count_parameters

    quantised = Case(method("qlora", r=4), tiny_dirs["llama"], "causal_lm").applied()
    full_precision = Case(method("lora", r=4), tiny_dirs["llama"], "causal_lm").applied()
    assert count_parameters(quantised) == count_parameters(full_precision)


def _mapped(path) -> bool:
    with open("/proc/self/maps") as maps:
        return str(path) in maps.read()


@pytest.mark.skipif(
    torch.cuda.is_available() or not os.path.exists("/proc/self/maps"), reason="CPU loading, read from /proc/self/maps"
)
def test_the_4bit_base_does_not_keep_the_checkpoint_file_mapped(wide_llama):
    """Left mapped, every page of the float32 checkpoint that quantisation read stays resident next to the 4-bit copy
    (on CPU, transformers loads the unquantised weights as views into the mapped file): QLoRA then saves nothing."""
    import gc

    from llmkit.methods.qlora import release_checkpoint_mapping

    checkpoint = wide_llama / "model.safetensors"
    base = _qlora_case(wide_llama).load_base()
    gc.collect()
    assert _mapped(checkpoint), "transformers no longer maps the checkpoint: release_checkpoint_mapping can go"
    release_checkpoint_mapping(base)
    gc.collect()
    assert not _mapped(checkpoint)
    model = _qlora_case(wide_llama).applied()
    gc.collect()
    assert not _mapped(checkpoint) and model is not None
