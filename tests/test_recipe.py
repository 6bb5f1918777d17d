"""The recipe schema: every bad config is one clear sentence naming the key (and line) and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import INSTRUCTIONS, REPO, run_cli, write_recipe

from llmkit import Recipe, RecipeError


def _minimal(tmp_path: Path, **extra) -> dict:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    return {"model": {"name": str(model)}, "data": {"train": str(INSTRUCTIONS)}, "output_dir": "out", **extra}


def _errors(tmp_path: Path, text: str, overrides=()) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(path, list(overrides))
    return str(info.value)


def test_minimal_recipe_fills_defaults(tmp_path):
    recipe = Recipe.from_dict(_minimal(tmp_path))
    assert recipe.task == "sft"
    assert recipe.method.name == "full"
    assert recipe.data.format == "alpaca"
    assert recipe.training.kwargs() == {}


def test_method_shorthand_and_overrides(tmp_path):
    recipe = Recipe.from_dict(
        _minimal(tmp_path, method="lora"),
        ["method.r=32", "training.max_steps=2", "output_dir=/tmp/x", "data.packing=true"],
    )
    assert (recipe.method.name, recipe.method.r) == ("lora", 32)
    assert recipe.training.max_steps == 2
    assert recipe.output_dir == "/tmp/x"
    assert recipe.data.packing is True


def test_training_keys_pass_through_by_transformers_names(tmp_path):
    recipe = Recipe.from_dict(_minimal(tmp_path, training={"label_smoothing_factor": 0.1, "max_steps": 3}))
    assert recipe.training.kwargs() == {"label_smoothing_factor": 0.1, "max_steps": 3}


def test_malformed_yaml_names_the_line(tmp_path):
    message = _errors(tmp_path, "model:\n  name: x\ndata: [unclosed\noutput_dir: o\n")
    assert "r.yaml:4" in message and "not valid YAML" in message


def test_unknown_keys_are_named_with_line_and_suggestion(tmp_path):
    message = _errors(
        tmp_path,
        f"""\
model:
  name: {_minimal(tmp_path)["model"]["name"]}
  dtyp: float32
data:
  train: {INSTRUCTIONS}
  formt: alpaca
training:
  learing_rate: 0.1
output_dir: out
""",
    )
    assert "r.yaml:3: model.dtyp: unknown key; did you mean 'dtype'?" in message
    assert "r.yaml:6: data.formt: unknown key; did you mean 'format'?" in message
    assert "r.yaml:8: training.learing_rate: unknown key; did you mean 'learning_rate'?" in message
    assert message.startswith("3 recipe errors")


def test_wrong_type_and_bad_value(tmp_path):
    message = _errors(
        tmp_path,
        f"""\
model:
  name: {_minimal(tmp_path)["model"]["name"]}
data:
  train: {INSTRUCTIONS}
  max_length: -3
training:
  max_steps: ten
output_dir: out
""",
    )
    assert "data.max_length: Input should be greater than 0 (got -3)" in message
    assert "training.max_steps: Input should be a valid integer" in message and "'ten'" in message


def test_missing_data_file_and_missing_section(tmp_path):
    message = _errors(tmp_path, "model:\n  name: gpt2\ndata:\n  train: nope.json\n")
    assert "data.train: file 'nope.json' does not exist" in message
    assert "output_dir: required key is missing" in message


def test_missing_model_path(tmp_path):
    message = _errors(tmp_path, f"model:\n  name: ./no/such/model\ndata:\n  train: {INSTRUCTIONS}\noutput_dir: o\n")
    assert "model.name: the local path './no/such/model' does not exist" in message


def test_duplicate_key(tmp_path):
    message = _errors(tmp_path, "model:\n  name: a\nmodel:\n  name: b\n")
    assert "key 'model' appears twice (also line 1)" in message


def test_unknown_method_and_task(tmp_path):
    message = _errors(tmp_path, f"model:\n  name: gpt2\ndata:\n  train: {INSTRUCTIONS}\nmethod: lorra\noutput_dir: o\n")
    assert "method.name: unknown method 'lorra'; did you mean 'lora'?" in message
    message = _errors(tmp_path, f"task: sfft\nmodel:\n  name: gpt2\ndata:\n  train: {INSTRUCTIONS}\noutput_dir: o\n")
    assert "unknown task 'sfft'; did you mean 'sft'?" in message


def test_owned_and_removed_training_keys_explain_the_fix(tmp_path):
    message = _errors(
        tmp_path,
        f"""\
model:
  name: gpt2
data:
  train: {INSTRUCTIONS}
training:
  output_dir: x
  warmup_ratio: 0.1
output_dir: o
""",
    )
    assert "training.output_dir: set output_dir at the top level" in message
    assert "training.warmup_ratio: transformers 5 removed warmup_ratio; use warmup_steps" in message


def test_bad_override_is_reported_as_override(tmp_path):
    path = write_recipe(tmp_path, _minimal(tmp_path))
    with pytest.raises(RecipeError, match=r"\(command-line override\) training.max_step: unknown key; did you mean"):
        Recipe.from_yaml(path, ["training.max_step=3"])
    with pytest.raises(RecipeError, match=r"must look like key\.path=value"):
        Recipe.from_yaml(path, ["training.max_steps"])


def test_columns_must_be_fields_of_the_format(tmp_path):
    with pytest.raises(RecipeError, match="columns maps \\['prompt'\\], which format 'alpaca' does not have"):
        Recipe.from_dict(_minimal(tmp_path, data={"train": str(INSTRUCTIONS), "columns": {"prompt": "q"}}))


def test_task_family_mismatch_is_caught_at_validate(tmp_path):
    recipe = _minimal(tmp_path)
    (Path(recipe["model"]["name"]) / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(RecipeError, match="task: 'sft' cannot run on a bert model"):
        Recipe.from_dict(recipe)


def test_unsupported_model_type(tmp_path):
    recipe = _minimal(tmp_path)
    (Path(recipe["model"]["name"]) / "config.json").write_text('{"model_type": "mamba"}')
    with pytest.raises(RecipeError, match="model type 'mamba' is not one llmkit supports"):
        Recipe.from_dict(recipe)


def test_validate_prints_resolved_recipe_and_round_trips(tmp_path):
    path = write_recipe(tmp_path, _minimal(tmp_path, method="lora"))
    code, out, err = run_cli("validate", str(path), "method.r=4")
    assert code == 0, err
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(out)
    assert Recipe.from_yaml(resolved).method.r == 4


def test_validate_reports_all_errors_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: gpt2\n  dtyp: x\ndata:\n  train: missing.json\noutput_dir: o\n")
    code, _out, err = run_cli("validate", str(path))
    assert code == 2
    assert "Traceback" not in err
    assert "2 recipe errors" in err and "model.dtyp" in err and "missing.json" in err


def test_validate_and_help_import_neither_torch_nor_the_harness(tmp_path):
    recipe = _minimal(tmp_path, method="lora")
    recipe["evaluation"] = {"benchmarks": [str(REPO / "data" / "mmlu-dev" / "mmlu_dev.yaml"), "hellaswag:10"]}
    path = write_recipe(tmp_path, recipe)
    check = "heavy = [m for m in ('torch', 'lm_eval') if m in sys.modules]; assert not heavy, heavy"
    code = f"import sys; from llmkit.cli import main; rc = main(['validate', sys.argv[1]]); {check}; sys.exit(rc)"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    code = f"import sys; from llmkit.cli import main\ntry: main(['--help'])\nexcept SystemExit: {check}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "benchmark" in done.stdout, done.stderr


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe, tmp_path, monkeypatch):
    """Run from a copy of the repository root in which the outputs that some recipes read from an earlier command
    (their headers say which) exist as stand-ins: the quickstart run as a teacher, step-1 rationales."""
    for name in ("data", "recipes"):
        (tmp_path / name).symlink_to(REPO / name)
    teacher = tmp_path / "outputs" / "quickstart"
    teacher.mkdir(parents=True)
    (teacher / "llmkit.json").write_text('{"family": "llama", "task": "sft", "head": "causal_lm"}')
    rationales = tmp_path / "outputs" / "rationales" / "sms-spam.jsonl"
    rationales.parent.mkdir()
    rationales.write_text('{"input": "Win a prize!", "label": "spam", "rationale": "It sells.", "source": "x:2"}\n')
    monkeypatch.chdir(tmp_path)
    text = recipe.read_text()
    assert text.startswith("#"), "every recipe starts with a comment saying what it does"
    assert f"llmkit train recipes/{recipe.name}" in text.split("\n\n")[0], "the header gives the command"
    try:
        Recipe.from_yaml(Path("recipes") / recipe.name)
    except RecipeError as exc:
        if "needs the PyPI package" in str(exc):
            pytest.skip(str(exc))
        raise


def test_recipe_reference_is_generated_from_the_schema():
    """docs/recipe.md is `llmkit explain`; regenerate it with `make docs` when the schema changes."""
    from llmkit.recipe.explain import reference

    assert (REPO / "docs" / "recipe.md").read_text() == reference()
    code, out, _ = run_cli("explain")
    assert code == 0 and "| `target_modules` |" in out and "## method: lora" in out


def test_hub_model_offline_is_one_sentence(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"model:\n  name: someone/not-cached-model\ndata:\n  train: {INSTRUCTIONS}\noutput_dir: o\n")
    code, _, err = run_cli("validate", str(path))
    assert code == 0, "valid as a recipe: the hub may be reachable where it runs"
    code, _, err = run_cli("train", str(path))
    assert code == 2 and "model.name: cannot load 'someone/not-cached-model'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.incomplete").exists()


def test_unreadable_recipe_files_are_one_sentence(tmp_path):
    path = tmp_path / "utf16.yaml"
    path.write_bytes("model: x\n".encode("utf-16"))
    with pytest.raises(RecipeError, match=r"utf16.yaml: is not UTF-8 text \(byte 0 cannot be decoded\)"):
        Recipe.from_yaml(path)
    with pytest.raises(RecipeError, match=r"is a directory; name the \.yaml file inside it"):
        Recipe.from_yaml(tmp_path)


def test_a_value_that_fits_no_member_of_a_union_is_one_problem(tmp_path):
    path = write_recipe(tmp_path, _minimal(tmp_path, method="lora"))
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(path, ["method.target_modules=5", "model=foo"])
    assert info.value.problems == [
        "(command-line override) model: Input should be a valid dictionary (got 'foo')",
        "(command-line override) method.target_modules: Input should be 'auto' or 'all-linear', or a valid list "
        "(got 5)",
    ]


def test_an_override_that_creates_a_section_is_blamed_on_the_override(tmp_path):
    path = write_recipe(tmp_path, _minimal(tmp_path))  # no method section: full fine-tuning
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(path, ["method.r=4", "training.foo.bar=1"])
    assert "(command-line override) method: method needs a name (e.g. method.name=lora)" in str(info.value)
    assert "(command-line override) training.foo: unknown key" in str(info.value)


@pytest.mark.parametrize("steps", ["-5", "0"])
def test_a_step_count_below_one_other_than_minus_one_is_refused(tmp_path, steps):
    """transformers runs the epochs for any max_steps below 1, so `training.max_steps=-5` used to start a full run."""
    path = write_recipe(tmp_path, _minimal(tmp_path))
    code, _, err = run_cli("validate", str(path), f"training.max_steps={steps}")
    assert code == 2 and f"training.max_steps: {steps} is not a number of steps" in err and "-1" in err
    assert Recipe.from_yaml(path, ["training.max_steps=-1"]).training.max_steps == -1


def test_version_and_explain_one_section():
    import llmkit

    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"llmkit {llmkit.__version__}"
    code, out, _ = run_cli("explain", "method.lora")
    assert code == 0 and out.startswith("## method: lora") and "## method: qlora" not in out and "| `r` |" in out
    code, out, _ = run_cli("explain", "method")
    assert "## method: lora" in out and "## method: qlora" in out and "## training" not in out
    code, _, err = run_cli("explain", "trainig")
    assert code == 1 and "explain: no recipe section 'trainig'; did you mean 'training'?" in err
