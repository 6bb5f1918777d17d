"""Every method on tiny random models of every family and head it supports (the cells of the compatibility matrix):
only its parameters train and all of them change, every frozen parameter stays bit-identical, the loss falls,
save → reload gives bit-identical logits, and mergeable methods merge into a plain transformers model."""

from __future__ import annotations

import json

import pytest
import torch
from methods_harness import SMALL, Case, batch, logits, method, snapshot, train

from llmkit.methods import METHODS
from llmkit.models import HEADS
from llmkit.recipe.matrix import model_level_cases

pytestmark = pytest.mark.usefixtures("one_thread")

# Merged logits against unmerged ones, float32: only summation order differs (QLoRA's 4-bit base is dequantised
# exactly; its default bfloat16 compute rounds the unmerged forward, the merged model computes in float32).
MERGE_ATOL = {"qlora": 3e-2}
MERGE_ATOL_DEFAULT = 1e-4


@pytest.fixture(scope="module")
def adapter_runs(tiny_dirs, tmp_path_factory):
    """Two adapter runs per (family, head), trained on different batches: the inputs of AdapterFusion."""
    made = {}

    def get(family: str, head: str) -> list[str]:
        if (family, head) not in made:
            runs = []
            for seed in (1, 2):
                case = Case(method("adapter", reduction_factor=4), tiny_dirs[family], head)
                model = case.applied()
                train(model, case, batch(case, seed=seed))
                run = tmp_path_factory.mktemp(f"adapter-{family}-{head}-{seed}")
                case.method.save(model, run)
                info = {"method": case.method.model_dump(), "base_model": {"name": str(tiny_dirs[family])}}
                (run / "llmkit.json").write_text(json.dumps(info))
                runs.append(str(run))
            made[family, head] = runs
        return made[family, head]

    return get


def _case(name, family, head, tiny_dirs, adapter_runs, **options) -> Case:
    keys = {**SMALL.get(name, {}), **options}
    if name == "adapter_fusion":
        keys["adapters"] = adapter_runs(family, head)
    return Case(method(name, **keys), tiny_dirs[family], head)


CASES = [(name, family, head, "") for name, family, head in model_level_cases()]
# DoRA and rsLoRA are options of lora (and qlora); they run on every cell lora does.
OPTIONS = {"dora": {"use_dora": True}, "rslora": {"use_rslora": True}}
CASES += [(n, f, h, option) for n, f, h, _ in CASES if n in ("lora", "qlora") for option in OPTIONS]


@pytest.mark.parametrize(("name", "family", "head", "option"), CASES, ids=["-".join(filter(None, c)) for c in CASES])
def test_method_trains_only_its_parameters_and_reloads(name, family, head, option, tiny_dirs, adapter_runs, tmp_path):
    case = _case(name, family, head, tiny_dirs, adapter_runs, **OPTIONS.get(option, {}))
    model = case.applied()
    before = snapshot(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"
    assert name == "full" or len(trainable) < len(before), "a parameter-efficient method froze nothing"

    data = batch(case)
    losses = train(model, case, data)
    assert losses[-1] < losses[0], losses
    after = snapshot(model)
    for n in before:
        if name == "adalora" and ".lora_E." in n and not after[n].any():
            continue  # singular values AdaLoRA's budget pruned before they ever grew (tested in test_methods_adalora)
        if n in trainable:
            assert not torch.equal(before[n], after[n]), f"{n} is trainable but did not change"
        else:
            assert torch.equal(before[n], after[n]), f"{n} is frozen but changed"

    expected = logits(model, data)
    run = tmp_path / "run"
    case.method.save(model, run)
    if case.method.saves_full_model:
        reloaded = HEADS[head].from_pretrained(run)
    else:
        reloaded = case.method.reload(case.load_base(), run)
    got = logits(reloaded, data)
    if name == "adalora":  # peft reloads pruned ranks as smaller matrices: the same sums in another order
        assert torch.allclose(got, expected, atol=1e-5, rtol=0), f"reload differs by {(got - expected).abs().max():.1e}"
    else:
        assert torch.equal(got, expected), "save → reload changed the logits"

    if METHODS[name].mergeable:
        merged = case.method.merged(case.load_base(), run)
        assert all(type(m).__module__.startswith(("transformers", "torch")) for m in merged.modules()), (
            "the merged model still holds peft or bitsandbytes layers"
        )
        merged.save_pretrained(tmp_path / "merged")
        plain = HEADS[head].from_pretrained(tmp_path / "merged")
        atol = MERGE_ATOL.get(name, MERGE_ATOL_DEFAULT)
        assert torch.allclose(logits(plain, data), expected, atol=atol), (
            f"merged logits differ by {(logits(plain, data) - expected).abs().max():.2e}"
        )


def test_rslora_scales_by_the_square_root_of_the_rank(tiny_dirs):
    for use_rslora, scale in ((False, 16 / 4), (True, 16 / 4**0.5)):
        case = Case(method("lora", r=4, lora_alpha=16, use_rslora=use_rslora), tiny_dirs["llama"], "causal_lm")
        layer = case.applied().base_model.model.model.layers[0].self_attn.q_proj
        assert layer.scaling["default"] == pytest.approx(scale)


def test_dora_learns_a_magnitude_per_output_feature(tiny_dirs):
    case = Case(method("lora", r=4, use_dora=True), tiny_dirs["llama"], "causal_lm")
    layer = case.applied().base_model.model.model.layers[0].self_attn.q_proj
    magnitude = layer.lora_magnitude_vector["default"].weight
    assert magnitude.requires_grad and magnitude.shape == (layer.out_features,)
