"""llmkit's own methods (not peft's): bottleneck adapters and AdapterFusion, and BitFit."""

from __future__ import annotations

import json

import pydantic
import pytest
import torch
from methods_harness import Case, batch, logits, method

from llmkit.adapters.bottleneck import Bottleneck, Fusion, places
from llmkit.methods import MethodContext

pytestmark = pytest.mark.usefixtures("one_thread")

# Places per tiny model (2 layers; T5: 2 encoder + 2 decoder blocks, whose decoder has cross-attention too).
PLACES = {
    ("bert", "houlsby"): 4,
    ("bert", "pfeiffer"): 2,
    ("gpt2", "houlsby"): 4,
    ("gpt2", "pfeiffer"): 2,
    ("llama", "houlsby"): 4,
    ("llama", "pfeiffer"): 2,
    ("t5", "houlsby"): 10,
    ("t5", "pfeiffer"): 4,
}
HEAD = {"bert": "seq_cls", "gpt2": "causal_lm", "llama": "causal_lm", "t5": "seq2seq_lm"}


@pytest.mark.parametrize(("family", "architecture"), list(PLACES), ids="-".join)
def test_adapters_sit_after_attention_and_feed_forward_and_start_as_identity(family, architecture, tiny_dirs):
    case = Case(method("adapter", architecture=architecture, reduction_factor=4), tiny_dirs[family], HEAD[family])
    data = batch(case)
    base = case.load_base()
    expected = logits(base, data)
    model = case.method.apply(base, case.ctx())
    assert len(places(model, architecture)) == PLACES[family, architecture]
    width = 32  # every tiny model; bottleneck 32 / 4 = 8
    per_place = 2 * width * 8 + 8 + width
    head = 32 * 2 + 2 if HEAD[family] == "seq_cls" else 0  # a new 2-label classifier trains too
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == PLACES[family, architecture] * per_place + head
    assert torch.equal(logits(model, data), expected), "an untrained adapter must not change the model"


def test_fusion_starts_as_the_average_of_its_adapters():
    torch.manual_seed(0)
    adapters = [Bottleneck(16, 4, "relu") for _ in range(3)]
    for adapter in adapters:
        torch.nn.init.normal_(adapter.up.weight)
    fusion = Fusion(adapters, 16)
    torch.nn.init.zeros_(fusion.query.weight)  # equal scores: a plain average
    hidden = torch.randn(2, 5, 16)
    mean = torch.stack([a(hidden) for a in adapters]).mean(0)
    assert torch.allclose(fusion(hidden), mean, atol=1e-6)


def _fake_run(path, name="adapter", base="m", architecture="houlsby"):
    """What the fusion checks read before any weights load: a finished run's llmkit.json."""
    path.mkdir()
    block = {"name": name, "architecture": architecture, "reduction_factor": 4, "activation": "relu"}
    (path / "llmkit.json").write_text(json.dumps({"method": block, "base_model": {"name": base}}))
    return str(path)


def test_fusion_checks_its_adapters_before_any_weights_load(tmp_path):
    ctx = MethodContext("llama", "sft", "causal_lm", "llama", model_name="m")
    a = _fake_run(tmp_path / "a")
    cases = {
        "is not a finished llmkit run": [a, str(tmp_path / "missing")],
        "was trained with method lora, not adapter": [a, _fake_run(tmp_path / "b", name="lora")],
        "was trained on 'other', but this recipe's model is 'm'": [a, _fake_run(tmp_path / "c", base="other")],
        "must share one architecture, got houlsby and pfeiffer": [
            a,
            _fake_run(tmp_path / "d", architecture="pfeiffer"),
        ],
    }
    for message, adapters in cases.items():
        with pytest.raises(ValueError, match=message):
            method("adapter_fusion", adapters=adapters).upstream_config(ctx)
    with pytest.raises(pydantic.ValidationError, match="fuses at least two adapter runs"):
        method("adapter_fusion", adapters=[a])


@pytest.mark.parametrize(("family", "head"), [("gpt2", "causal_lm"), ("bert", "seq_cls")])
def test_bitfit_trains_exactly_the_biases_and_the_new_head(family, head, tiny_dirs):
    case = Case(method("bitfit"), tiny_dirs[family], head)
    model = case.applied()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    biases = [n for n, _ in model.named_parameters() if n.endswith(".bias")]
    head_weights = ["classifier.weight"] if head == "seq_cls" else []
    assert sorted(trainable) == sorted(biases + head_weights)


def test_bitfit_refuses_a_model_without_biases(tiny_dirs):
    case = Case(method("bitfit"), tiny_dirs["llama"], "causal_lm")
    with pytest.raises(ValueError, match="has no bias terms to train"):
        case.method.apply(case.load_base(), case.ctx())
