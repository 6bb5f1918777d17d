"""Preference data and the dpo / orpo / kto recipe sections: what TRL will see, and one sentence for each bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import PREFERENCES, write_recipe

from llmkit import DataError, Recipe, RecipeError
from llmkit.data.preference import build_pairs, to_trl, tokenize_pair
from llmkit.data.sources import read_source
from llmkit.recipe.formats import FORMATS
from llmkit.testing import tiny_model, tiny_tokenizer

ALPACA_ROW = {"instruction": "Name a colour.", "input": "", "chosen": "Blue.", "rejected": "Go away."}
CHAT_ROW = {
    "chosen": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
    "rejected": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Go away."}],
}


def _recipe(tmp_path, data_path, **extra):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    base = {
        "task": "dpo",
        "model": {"name": str(model)},
        "data": {"train": str(data_path), "format": "alpaca_preference"},
        "output_dir": "out",
    }
    return {**base, **extra}


def _rows(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_source(str(path))


# ---------------------------------------------------------------- row checks


@pytest.mark.parametrize(
    ("fmt", "row", "problem"),
    [
        ("alpaca_preference", {"instruction": "a", "chosen": "b"}, "row has no 'rejected' field"),
        ("preference", {"prompt": "a", "rejected": "b"}, "row has no 'chosen' field"),
        ("preference", {"chosen": "b", "rejected": "c"}, "row has no 'prompt' field"),
        ("preference", {"prompt": "a", "chosen": "b", "rejected": ["c"]}, "'rejected' must be a string"),
        ("preference", {**CHAT_ROW, "chosen": [{"role": "bot", "content": "x"}]}, "chosen[0].role is 'bot'"),
        ("preference", {**CHAT_ROW, "chosen": CHAT_ROW["chosen"][:1]}, "last message of 'chosen' must be the assis"),
        (
            "preference",
            {**CHAT_ROW, "rejected": [{"role": "user", "content": "Other?"}, {"role": "assistant", "content": "x"}]},
            "must start with the same user",
        ),
    ],
)
def test_bad_preference_rows_are_one_sentence(fmt, row, problem):
    assert problem in FORMATS[fmt].check_row(row)


def test_good_rows_pass():
    assert FORMATS["alpaca_preference"].check_row(ALPACA_ROW) is None
    assert FORMATS["preference"].check_row({"prompt": "a", "chosen": "b", "rejected": "c"}) is None
    assert FORMATS["preference"].check_row(CHAT_ROW) is None
    explicit = {
        "prompt": CHAT_ROW["chosen"][:1],
        "chosen": CHAT_ROW["chosen"][1:],
        "rejected": CHAT_ROW["rejected"][1:],
    }
    assert FORMATS["preference"].check_row(explicit) is None


def test_the_shipped_preference_data_fits_its_format():
    rows = json.loads(PREFERENCES.read_text())
    assert len(rows) == 1100
    assert all(FORMATS["alpaca_preference"].check_row(r) is None for r in rows)


# ---------------------------------------------------------------- rows → TRL's layout


def test_alpaca_pairs_are_built_like_sft_prompts():
    chat = to_trl({**ALPACA_ROW, "input": "Pick one."}, "alpaca_preference", use_chat=True, system_prompt="Be brief.")
    assert chat == {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a colour.\n\nPick one."},
        ],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    text = to_trl(ALPACA_ROW, "alpaca_preference", use_chat=False, system_prompt=None)
    assert text["prompt"].endswith("### Instruction:\nName a colour.\n\n### Response:\n")
    assert (text["chosen"], text["rejected"]) == ("Blue.", "Go away.")


def test_implicit_chat_prompt_is_made_explicit():
    pair = to_trl(CHAT_ROW, "preference", use_chat=False, system_prompt=None)
    assert pair["prompt"] == CHAT_ROW["chosen"][:1]
    assert pair["chosen"] == CHAT_ROW["chosen"][1:] and pair["rejected"] == CHAT_ROW["rejected"][1:]


def _trl_tokenised(pairs, tokenizer):
    """What TRL's own DPOTrainer preprocessing makes of the pairs."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir="unused", max_length=None, report_to="none", bf16=False)
    trainer = SimpleNamespace(_tokenizer=tokenizer)
    return DPOTrainer._prepare_dataset(trainer, Dataset.from_list(pairs), tokenizer, args, "train")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_pairs_tokenise_exactly_as_trl_does(family):
    """llmkit applies data.max_length and scores held-out pairs before the trainer exists, from its own copy of
    TRL's tokenisation; it must match TRL's token for token (chat template on llama, EOS-appended text on gpt2)."""
    tokenizer = tiny_tokenizer(family)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    rows = json.loads(PREFERENCES.read_text())[:6]
    use_chat = family == "llama"
    pairs = [to_trl(r, "alpaca_preference", use_chat=use_chat, system_prompt=None) for r in rows]
    theirs = _trl_tokenised(pairs, tokenizer)
    for pair, expected in zip(pairs, theirs, strict=True):
        ours = tokenize_pair(pair, tokenizer)
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert ours[key] == expected[key], key
        if not use_chat:
            assert ours["chosen_ids"][-1] == ours["rejected_ids"][-1] == tokenizer.eos_token_id


# ---------------------------------------------------------------- pair policies


def _data(**keys):
    base = dict(format="alpaca_preference", template="auto", system_prompt=None, max_length=512)
    base.update(overlong="drop", identical_pairs="error", max_target_length=None)
    base.update(keys)
    return SimpleNamespace(**base)


def test_identical_pairs_are_named_with_the_fix(tmp_path):
    rows = _rows(tmp_path, [ALPACA_ROW, {**ALPACA_ROW, "rejected": "Blue. "}, ALPACA_ROW])
    with pytest.raises(DataError) as info:
        build_pairs(rows, _data(), tiny_tokenizer("llama"))
    message = str(info.value)
    assert "1 rows have chosen identical to rejected" in message
    assert "pairs.jsonl:2" in message and "data.identical_pairs: drop" in message
    pairs, where, stats = build_pairs(rows, _data(identical_pairs="drop"), tiny_tokenizer("llama"))
    assert len(pairs) == 2 and where == [f"{rows.name}:1", f"{rows.name}:3"] and stats.identical == 1
    assert "1 dropped with chosen identical to rejected" in stats.summary("x")


def test_overlong_pairs_follow_data_overlong(tmp_path):
    long_row = {**ALPACA_ROW, "chosen": "Blue, " * 60}
    rows = _rows(tmp_path, [ALPACA_ROW, long_row])
    tokenizer = tiny_tokenizer("llama")
    pairs, _, stats = build_pairs(rows, _data(max_length=48), tokenizer)
    assert len(pairs) == 1 and stats.dropped_overlong == 1
    pairs, _, stats = build_pairs(rows, _data(max_length=48, overlong="truncate"), tokenizer)
    assert len(pairs) == 2 and stats.truncated == 1 and stats.max_tokens == 48
    with pytest.raises(DataError, match=r"pairs.jsonl:2: is \d+ tokens, longer than data.max_length=48"):
        build_pairs(rows, _data(max_length=48, overlong="error"), tokenizer)
    pairs, _, stats = build_pairs(rows, _data(max_length=8, overlong="truncate"), tokenizer)
    assert pairs == [] and stats.dropped_overlong == 2, "a prompt that fills max_length leaves no answer to score"


def test_text_and_chat_rows_cannot_mix(tmp_path):
    rows = _rows(tmp_path, [{"prompt": "a", "chosen": "b", "rejected": "c"}, CHAT_ROW])
    with pytest.raises(DataError, match="mixes rows with text answers and rows with chat messages"):
        build_pairs(rows, _data(format="preference"), tiny_tokenizer("llama"))


# ---------------------------------------------------------------- the disabled adapter as reference


@pytest.mark.parametrize(("init", "keeps_copy"), [(True, False), (False, True)])
def test_reference_is_the_disabled_adapter_only_when_that_is_the_initial_policy(init, keeps_copy):
    """TRL gives a PeftModel a frozen 'ref' copy of its adapter. A fresh LoRA is the identity, so llmkit drops the
    copy and uses the base with the adapter disabled; an adapter that changes the output from the start keeps it."""
    from peft import LoraConfig, get_peft_model

    from llmkit.tasks.preference import use_disabled_adapter

    config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=init)
    model = get_peft_model(tiny_model("llama"), config)
    model.add_adapter("ref", config)  # what DPOTrainer does with a PeftModel and no ref_model
    pair = to_trl(ALPACA_ROW, "alpaca_preference", use_chat=True, system_prompt=None)
    ids = tokenize_pair(pair, tiny_tokenizer("llama"))
    said = use_disabled_adapter(model, ids["prompt_ids"] + ids["chosen_ids"])
    assert ("ref" in model.peft_config) is keeps_copy
    assert ("disabled" in said) is not keeps_copy


def test_preference_accuracy_does_not_depend_on_padding():
    from llmkit.tasks.preference import _answer_logps, preference_accuracy

    tokenizer = tiny_tokenizer("llama")
    tokenizer.pad_token = tokenizer.eos_token
    rows = json.loads(PREFERENCES.read_text())[:10]
    pairs = [to_trl(r, "alpaca_preference", use_chat=True, system_prompt=None) for r in rows]
    model = tiny_model("llama", seed=3).eval()
    one_by_one = []
    for pair in pairs:
        ids = [tokenize_pair(pair, tokenizer)]
        chosen = _answer_logps(model, ids, "chosen_ids", 512, tokenizer.pad_token_id)
        rejected = _answer_logps(model, ids, "rejected_ids", 512, tokenizer.pad_token_id)
        one_by_one.append(bool(chosen > rejected))
    assert preference_accuracy(model, pairs, tokenizer, 512, batch=4) == sum(one_by_one) / len(pairs)
    with torch.no_grad():  # and the answer log-prob is the plain sum over answer tokens
        ids = tokenize_pair(pairs[0], tokenizer)
        full = torch.tensor([ids["prompt_ids"] + ids["chosen_ids"]])
        logps = model(input_ids=full).logits[0, :-1].log_softmax(-1).gather(-1, full[0, 1:, None])[:, 0]
        expected = logps[len(ids["prompt_ids"]) - 1 :].sum()
        assert torch.allclose(_answer_logps(model, [ids], "chosen_ids", 512, 0)[0], expected, atol=1e-5)


# ---------------------------------------------------------------- recipe sections


def _errors(tmp_path, recipe) -> str:
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(write_recipe(tmp_path, recipe))
    return str(info.value)


def test_dpo_section_keys_are_trl_names_checked_up_front(tmp_path):
    recipe = _recipe(
        tmp_path, PREFERENCES, dpo={"bta": 0.1, "learning_rate": 1e-5, "max_length": 9, "loss_type": "ipoo"}
    )
    message = _errors(tmp_path, recipe)
    assert "dpo.bta: unknown key; did you mean 'beta'?" in message
    assert "dpo.learning_rate: a training argument; put it under training" in message
    assert "dpo.max_length: set data.max_length" in message
    assert "dpo.loss_type: unknown loss_type 'ipoo'; did you mean 'ipo'?" in message
    good = Recipe.from_dict(_recipe(tmp_path, PREFERENCES, dpo={"beta": 0.2, "loss_type": ["sigmoid", "sft"]}))
    assert good.dpo.kwargs() == {"beta": 0.2, "loss_type": ["sigmoid", "sft"]}
    assert Recipe.from_dict(_recipe(tmp_path, PREFERENCES, dpo={"ld_alpha": 0.5})).dpo.kwargs() == {"ld_alpha": 0.5}


def test_sections_belong_to_their_task(tmp_path):
    message = _errors(tmp_path, _recipe(tmp_path, PREFERENCES, task="kto", dpo={"beta": 0.1}))
    assert "dpo: this section applies to task dpo, not 'kto'; remove it" in message
    recipe = _recipe(tmp_path, PREFERENCES, task="sft")
    recipe["data"] = {"train": str(PREFERENCES), "format": "alpaca", "identical_pairs": "drop"}
    assert "data.identical_pairs applies to preference data only" in _errors(tmp_path, recipe)
    recipe = _recipe(tmp_path, PREFERENCES, task="sft")
    assert "data.format 'alpaca_preference' does not fit task 'sft'" in _errors(tmp_path, recipe)


def test_kto_and_orpo_sections(tmp_path):
    recipe = Recipe.from_dict(_recipe(tmp_path, PREFERENCES, task="kto", kto={"desirable_weight": 1.5}))
    assert recipe.kto.kwargs() == {"desirable_weight": 1.5}
    message = _errors(tmp_path, _recipe(tmp_path, PREFERENCES, task="orpo", orpo={"beta": -1}))
    assert "orpo.beta: Input should be greater than 0" in message


def test_validating_preference_and_distillation_recipes_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    dpo = write_recipe(tmp_path, _recipe(tmp_path, PREFERENCES, dpo={"beta": 0.1, "ld_alpha": 0.5}), "dpo.yaml")
    distill = _recipe(tmp_path, PREFERENCES, task="distill", distill={"teacher": str(tmp_path / "model")})
    distill["data"] = {"train": str(PREFERENCES.parent / "instruction-data.json"), "format": "alpaca"}
    distill = write_recipe(tmp_path, distill, "distill.yaml")
    code = (
        "import sys; from llmkit.cli import main\n"
        "for path in sys.argv[1:]:\n"
        "    assert main(['validate', path]) == 0, path\n"
        "assert 'torch' not in sys.modules, 'validate imported torch'"
    )
    done = subprocess.run([sys.executable, "-c", code, str(dpo), str(distill)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
