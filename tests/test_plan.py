"""`llmkit plan`: from the config alone, the parameter counts of the real models, the trainable counts of the real
methods, the activations autograd really keeps, and a batch search that keeps the global batch; without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import transformers
from conftest import INSTRUCTIONS, REPO, run_cli, write_recipe
from methods_harness import Case, method

from llmkit.plan.arch import arch_of
from llmkit.plan.config import model_config
from llmkit.plan.memory import _bert, _gpt2, _llama, _t5_decoder, _t5_encoder
from llmkit.plan.methods import trains
from llmkit.recipe import ModelSection

HEADS = {
    "causal_lm": transformers.AutoModelForCausalLM,
    "seq_cls": transformers.AutoModelForSequenceClassification,
    "seq2seq_lm": transformers.AutoModelForSeq2SeqLM,
}
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=300)


def _configs(tiny_dirs):
    """(name, config dict, head): the tiny models of every family under each head they have, and real configs."""
    found = []
    for family, heads in {"llama": ("causal_lm", "seq_cls"), "gpt2": ("causal_lm", "seq_cls"), "bert": ("seq_cls",),
                          "t5": ("seq2seq_lm", "seq_cls")}.items():  # fmt: skip
        config = json.loads((tiny_dirs[family] / "config.json").read_text())
        found += [(family, config, head) for head in heads]
    found.append(("smollm2", model_config(ModelSection(name="packaged:smollm2-135m-instruct")), "causal_lm"))
    found.append(("minilm", model_config(ModelSection(name="packaged:all-minilm-l6-v2")), "seq_cls"))
    found.append(("t5-small", transformers.T5Config(decoder_start_token_id=0).to_dict(), "seq2seq_lm"))
    found.append(("qwen2", transformers.Qwen2Config(num_key_value_heads=2, **SMALL).to_dict(), "causal_lm"))
    found.append(("roberta", transformers.RobertaConfig(**SMALL).to_dict(), "seq_cls"))
    return found


def test_parameter_counts_are_the_real_models(tiny_dirs):
    for name, config, head in _configs(tiny_dirs):
        real_config = transformers.AutoConfig.for_model(**{**config, "num_labels": 2})
        with torch.device("meta"):
            model = HEADS[head].from_config(real_config)
        assert arch_of(config, head).total_params() == sum(p.numel() for p in model.parameters()), (name, head)


METHODS = [
    ("full", {}),
    ("lora", {"r": 4, "target_modules": "all-linear"}),
    ("lora", {"r": 4}),
    ("lora", {"r": 4, "use_dora": True}),
    ("adalora", {"init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 2}),
    ("bitfit", {}),
    ("prompt_tuning", {"num_virtual_tokens": 4}),
]
TASK = {"causal_lm": "sft", "seq_cls": "classification", "seq2seq_lm": "seq2seq"}


@pytest.mark.parametrize(("family", "head"), [("llama", "causal_lm"), ("gpt2", "seq_cls"), ("bert", "seq_cls"),
                                              ("t5", "seq2seq_lm")])  # fmt: skip
def test_trainable_counts_are_what_the_methods_train(family, head, tiny_dirs):
    from llmkit.models import count_parameters

    config = json.loads((tiny_dirs[family] / "config.json").read_text())
    for name, keys in METHODS:
        block = method(name, **keys)
        if block.why_not(family, TASK[head]):
            continue
        real, _ = count_parameters(Case(block, tiny_dirs[family], head).applied())
        assert trains(arch_of(config, head), block, head).trainable == real, (name, keys)


def _saved_per_token_layer(build, batch):
    """Elements autograd keeps per token for one more layer (parameters and buffers not counted)."""

    def saved(model):
        own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
        seen = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in own:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(**batch)
        return sum(seen.values())

    return saved(build(2)) - saved(build(1))


def _lora(model, target, task):
    from peft import LoraConfig, get_peft_model

    fan = isinstance(model, transformers.GPT2PreTrainedModel)
    return get_peft_model(model, LoraConfig(r=8, target_modules=target, lora_dropout=0.0, task_type=task,
                                            fan_in_fan_out=fan))  # fmt: skip


@pytest.mark.parametrize("target", [None, "all-linear", "auto"])
@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_activations_are_what_autograd_keeps(family, target):
    """The per-layer formulas of llmkit.plan.memory against the tensors autograd saves, for full fine-tuning and
    LoRA, with and without attention dropout (CPU: sdpa's math path keeps the attention maps)."""
    torch.manual_seed(0)
    seq = 48
    ids = torch.randint(5, 250, (2, seq))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for dropout in (0.0, 0.1):
        if family == "llama":
            config = transformers.LlamaConfig(num_key_value_heads=2, attention_dropout=dropout, **SMALL)
            head, task = "causal_lm", "CAUSAL_LM"
        elif family == "gpt2":
            config = transformers.GPT2Config(n_embd=64, n_head=4, n_layer=2, vocab_size=300, resid_pdrop=dropout,
                                             attn_pdrop=dropout, embd_pdrop=dropout)  # fmt: skip
            head, task = "causal_lm", "CAUSAL_LM"
        else:
            config = transformers.BertConfig(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                                             **SMALL)  # fmt: skip
            head, task = "seq_cls", "SEQ_CLS"
        config_dict = config.to_dict()

        def build(layers, config=config, head=head, task=task):
            model = HEADS[head].from_config(config.__class__(**{**config.to_dict(), _layers_key(config): layers}))
            return model if target is None else _lora(model, "all-linear" if target == "all-linear" else None, task)

        arch = arch_of(config_dict, head)
        block = method("full") if target is None else method("lora", r=8, lora_dropout=0.0, target_modules=target)
        what = trains(arch, block, head)
        formula = {"llama": _llama, "gpt2": _gpt2, "bert": _bert}[family](arch, what, seq, cpu=True)
        measured = _saved_per_token_layer(build, batch) / (2 * seq) / 4
        assert formula == pytest.approx(measured, rel=0.02), (dropout, formula, measured)


def _layers_key(config):
    return "n_layer" if isinstance(config, transformers.GPT2Config) else "num_hidden_layers"


def test_t5_activations_are_what_autograd_keeps():
    torch.manual_seed(0)
    seq, target = 48, 16
    batch = {"input_ids": torch.randint(5, 250, (2, seq)), "labels": torch.randint(5, 250, (2, target))}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    for dropout, gated in ((0.0, False), (0.1, False), (0.0, True)):
        base = dict(d_model=64, d_ff=128, d_kv=16, num_heads=4, vocab_size=300, dropout_rate=dropout,
                    decoder_start_token_id=0, feed_forward_proj="gated-gelu" if gated else "relu")  # fmt: skip

        def build(enc, dec, base=base):
            return transformers.T5ForConditionalGeneration(
                transformers.T5Config(num_layers=enc, num_decoder_layers=dec, **base)
            )

        arch = arch_of(transformers.T5Config(num_layers=2, **base).to_dict(), "seq2seq_lm")
        encoder = _saved_per_token_layer(lambda n, b=build: b(n, 1), batch) / (2 * seq) / 4
        decoder = _saved_per_token_layer(lambda n, b=build: b(1, n), batch) / (2 * target) / 4
        assert _t5_encoder(arch, seq) == pytest.approx(encoder, rel=0.02), (dropout, gated)
        assert _t5_decoder(arch, seq, target) == pytest.approx(decoder, rel=0.03), (dropout, gated)


def _quickstart(tmp_path, **training):
    recipe = (REPO / "recipes" / "quickstart.yaml").read_text().replace("data/instruction-data.json", str(INSTRUCTIONS))
    path = tmp_path / "q.yaml"
    path.write_text(recipe)
    return path, [f"training.{k}={v}" for k, v in training.items()]


def test_plan_command_reads_configs_only_and_keeps_the_global_batch(tmp_path):
    path, overrides = _quickstart(tmp_path, per_device_train_batch_size=16, gradient_accumulation_steps=2)
    code = (
        "import sys; from llmkit.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'plan imported torch'; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code, "plan", str(path), *overrides, "--device", "cuda:80GB"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "134,515,008 parameters; method lora trains 4,884,480 (3.63%)" in out
    assert "weights bfloat16, bf16 autocast" in out and "fits" in out
    assert "largest per-device batch that fits: 32 with gradient_accumulation_steps 1 (keeps 32" in out
    assert "not measured on GPU" in out

    code, out, _ = run_cli("plan", str(path), *overrides, "--device", "cuda:4GB")
    assert code == 0 and "does NOT fit" in out
    fits = int(out.split("largest per-device batch that fits: ")[1].split()[0])
    accumulation = int(out.split("gradient_accumulation_steps ")[1].split()[0])
    assert fits < 16 and fits * accumulation == 32, "a smaller batch, the same global batch"
    code, out, _ = run_cli("plan", str(path), "--device", "cuda:0.1GB")
    assert "not even batch 1 fits" in out


def test_plan_says_what_it_cannot_model(tmp_path):
    path, _ = _quickstart(tmp_path)
    code, _, err = run_cli("plan", str(path), "method=ia3")
    assert code == 2 and "llmkit plan does not model method 'ia3' yet" in err
    code, _, err = run_cli("plan", str(path), "--device", "tpu")
    assert code == 1 and "--device: 'tpu' is neither cpu nor cuda:<memory>GB" in err
    recipe = write_recipe(tmp_path, {"model": {"name": str(tmp_path / "m")}, "data": {"train": str(INSTRUCTIONS)},
                                     "output_dir": "o"}, "m.yaml")  # fmt: skip
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "phi3"}')
    code, _, err = run_cli("plan", str(recipe))
    assert code == 2 and "does not know the layout of model type 'phi3' yet" in err


def test_the_chunked_loss_plans_one_chunk_of_logits(tmp_path):
    """SmolLM2 (49,152 tokens): the chunked loss holds 256 trained tokens' logits at a time, not the batch's."""
    from llmkit.plan import plan
    from llmkit.recipe import Recipe

    path, _ = _quickstart(tmp_path)
    chunked = plan(Recipe.from_yaml(path), "cpu")
    whole = plan(Recipe.from_yaml(path, ["training.chunked_loss=false"]), "cpu")
    assert chunked.setup.chunk == 256 and whole.setup.chunk == 0
    assert chunked.terms.logits == 256 * 49_152 * 12
    assert whole.terms.logits == 4 * 256 * 49_152 * 12  # batch 4 × max_length 256, float32
    assert chunked.terms.total == whole.terms.total - whole.terms.logits + chunked.terms.logits
