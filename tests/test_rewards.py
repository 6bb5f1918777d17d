"""GRPO's rewards without a model: the built-ins score what they say, a user's function is imported by reference (and
only at train time), every reward is guarded, and the `grpo:` section is checked at validate, one sentence each."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import INSTRUCTIONS, write_recipe

from llmkit import Recipe, RecipeError
from llmkit.errors import LlmkitError
from llmkit.recipe.rl import GrpoSection, Reward
from llmkit.rewards import Checked, build
from llmkit.rewards.builtin import exact_match, final_answer, length_penalty, normalise, regex
from llmkit.rewards.user import load_function


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("12 + 7 = 19. Answer: 19", "19"),
        ("The answer is 42.", "42"),
        ("so we get \\boxed{3/4} in the end", "3/4"),
        ("first 10, then 20, finally 30 apples", "30"),
        ("#### 1,250", "1,250"),
        ("no number at all", "no number at all"),
    ],
)
def test_final_answer_is_what_the_completion_ends_on(completion, answer):
    assert final_answer(completion) == answer


def test_exact_match_compares_normalised_final_answers_with_the_column():
    reward = exact_match("answer")
    completions = ["Answer: 19.", "Answer: **19**", "the total is 19.0", "Answer: 1,900", "Answer: 18", "nothing"]
    answers = ["19", "19", 19, "1900", "19", "19"]
    assert reward(completions=completions, answer=answers) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    chat = [[{"role": "assistant", "content": "Answer: 7"}]]  # TRL's completions for a chat prompt
    assert reward(completions=chat, answer=["7"]) == [1.0]
    assert exact_match("answer", extract=r"<a>(.*?)</a>")(
        completions=["<a>Paris</a> or <a>paris</a>"], answer=["PARIS"]
    ) == [1.0]
    assert normalise(" $1,234.0 ") == normalise("1234") and normalise("Yes!") == "yes"


def test_regex_and_length_penalty():
    assert regex(r"^.*Answer: \d+$")(completions=["x\nAnswer: 3", "Answer: three"]) == [1.0, 0.0]
    penalty = length_penalty(max_tokens=10, ramp=4)  # TRL's soft overlong punishment: 0 up to 6 tokens, -1 at 10
    assert penalty(completion_ids=[[1] * 6, [1] * 8, [1] * 10]) == [0.0, -0.5, -1.0]


# ---------------------------------------------------------------- the guard around every reward


def _call(function, n=3, state=None):
    prompts = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(n)]
    checked = Checked(function, "mine", "function rewards.py:mine")
    return checked(prompts=prompts, completions=["x"] * n, completion_ids=[[1]] * n, trainer_state=state)


def test_a_reward_that_returns_the_wrong_thing_or_raises_is_one_sentence_naming_it_and_the_batch():
    assert _call(lambda completions, **kw: [1, 0.5, None]) == [1.0, 0.5, None]  # None: no reward there, as TRL allows
    state = SimpleNamespace(global_step=6)
    with pytest.raises(LlmkitError) as caught:
        _call(lambda completions, **kw: [1.0, 2.0], state=state)
    message = str(caught.value)
    assert message.startswith("reward function rewards.py:mine returned 2 values for 3 completions")
    assert "at training step 7, on a batch of 3 completions whose first prompt is 'What is 0 + 1?'" in message
    with pytest.raises(LlmkitError, match="returned 'high' for completion 1; each reward must be a float"):
        _call(lambda completions, **kw: [1.0, "high", 0.0])
    with pytest.raises(LlmkitError, match="returned a float; it must return a list of 3 floats"):
        _call(lambda completions, **kw: 1.0)

    def broken(completions, **kwargs):
        raise KeyError("answer")

    with pytest.raises(LlmkitError, match=r"raised KeyError: 'answer' — while evaluating, on a batch of 3"):
        _call(broken)


def test_a_users_function_is_imported_by_file_or_module_and_fingerprinted(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def short(completions, **kwargs):\n    return [-len(c) for c in completions]\n"
    )
    function, record = load_function(f"{tmp_path}/my_rewards.py:short", "grpo.rewards.0")
    assert function(completions=["ab", "abc"]) == [-2, -3]
    assert record["file"].endswith("my_rewards.py") and len(record["sha256"]) == 64
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_function("my_rewards:short", "grpo.rewards.0")[0](completions=["a"]) == [-1]


@pytest.mark.parametrize(
    ("source", "reference", "message"),
    [
        (
            "import not_a_module\n",
            "bad.py:f",
            "grpo.rewards.0: cannot import 'bad.py:f': ModuleNotFoundError: No module",
        ),
        ("def f(:\n", "bad.py:f", "cannot import 'bad.py:f': SyntaxError"),
        ("def g(**kwargs):\n    return []\n", "bad.py:f", "'bad.py' has no 'f'"),
        ("f = 3\n", "bad.py:f", "'bad.py:f' is a int, not a function"),
        ("def f(completions):\n    return []\n", "bad.py:f", "must accept **kwargs: TRL passes prompts, completions"),
    ],
)
def test_a_function_that_cannot_be_called_as_trl_calls_it_is_refused_before_training(
    source, reference, message, tmp_path
):
    (tmp_path / "bad.py").write_text(source)  # the test runs in tmp_path
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_function(reference, "grpo.rewards.0")


# ---------------------------------------------------------------- the grpo: section at validate


def _grpo(tmp_path, grpo: dict, **training) -> dict:
    return {
        "task": "grpo",
        "model": {"name": "gpt2"},
        "data": {"train": str(INSTRUCTIONS), "format": "prompt", "columns": {"prompt": "instruction"}},
        "grpo": grpo,
        "training": {"per_device_train_batch_size": 4, **training},
        "output_dir": str(tmp_path / "run"),
    }


def _problems(recipe: dict) -> str:
    with pytest.raises(RecipeError) as caught:
        Recipe.from_dict(recipe)
    return str(caught.value)


def test_validate_checks_the_grpo_section_and_its_rewards(tmp_path):
    (tmp_path / "dpo-run").mkdir()
    (tmp_path / "dpo-run" / "llmkit.json").write_text(json.dumps({"task": "dpo", "method": {"name": "full"}}))
    rewards = [
        {"exact_match": "answer", "regex": "x"},
        {"function": "missing.py:f"},
        {"function": "not a module:f"},
        {"regex": "("},
        {"reward_model": str(tmp_path)},
        {"reward_model": str(tmp_path / "dpo-run")},
        {"exact_match": "answer", "extract": "no group"},
    ]
    message = _problems(_grpo(tmp_path, {"rewards": rewards, "reward_weights": [1], "max_length": 9, "bta": 0.1}))
    for expected in (
        "give exactly one of exact_match, regex, length_penalty, function, reward_model in each reward (got "
        "exact_match and regex)",
        "function file 'missing.py' does not exist",
        "'not a module' is neither a .py file nor a module name",
        "'(' is not a valid regular expression",
        f"'{tmp_path}' is not a finished llmkit run",
        "is a task dpo run; use the output_dir of a task reward run",
        "extract needs a group around the answer",
        "grpo.reward_weights: give each reward its weight in rewards",
        "grpo.max_length: set data.max_length (the prompt) and max_completion_length in this section (the completion)",
        "grpo.bta: unknown key; did you mean 'beta'?",
    ):
        assert expected in message, expected
    assert "grpo.rewards: task grpo needs at least one reward" in _problems(_grpo(tmp_path, {}))


def test_num_generations_must_divide_the_generation_batch(tmp_path):
    message = _problems(_grpo(tmp_path, {"num_generations": 3, "rewards": [{"regex": "x"}]}))
    assert message == (
        "recipe error: grpo.num_generations: 3 completions per prompt do not divide the generation batch of 4 "
        "completions (training.per_device_train_batch_size 4 × steps_per_generation 1); make that batch a multiple "
        "of 3, or change num_generations"
    )
    ok = _grpo(tmp_path, {"num_generations": 3, "rewards": [{"regex": "x"}]}, gradient_accumulation_steps=3)
    assert Recipe.from_dict(ok).grpo.num_generations == 3  # 4 × 3 = 12 completions: four whole groups


def test_validate_never_imports_the_reward_function(tmp_path):
    """`llmkit validate` names the file but does not run it (DESIGN.md: imported at train time only)."""
    marker = tmp_path / "imported"
    (tmp_path / "rewards.py").write_text(f"open({str(marker)!r}, 'w')\ndef f(completions, **kwargs):\n    return []\n")
    path = write_recipe(tmp_path, _grpo(tmp_path, {"num_generations": 4, "rewards": [{"function": "rewards.py:f"}]}))
    done = subprocess.run([sys.executable, "-m", "llmkit", "validate", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert "function: rewards.py:f" in done.stdout


def test_build_names_each_reward_and_keeps_its_weight():
    section = GrpoSection(rewards=[Reward(exact_match="answer"), Reward(regex="x", weight=0.2, name="format")])
    rewards = build(section, tokenizer=None)
    assert rewards.labels == ["exact_match", "format"] and rewards.weights == [1.0, 0.2]
    assert rewards.records == [{"name": "exact_match", "exact_match": "answer"}, {"name": "format", "regex": "x"}]
