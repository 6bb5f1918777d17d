"""`llmkit benchmark MODEL --tasks ...` and a recipe's `evaluation.benchmarks`: the harness on a finished run (its
adapter unmerged, a merged or fully fine-tuned model, a QLoRA run in 4 bits) or on any decoder llmkit can load by
name, and with a baseline on the model the run started from, so what tuning gained and what it forgot show in one
table. Everything the user can get wrong is checked before a model loads, and nothing is written until every figure
is in.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.benchmark import report
from llmkit.benchmark.harness import Settings, evaluate
from llmkit.benchmark.report import Row
from llmkit.benchmark.tasks import Resolved, parse, require_harness, resolve
from llmkit.console import say, set_verbosity
from llmkit.errors import LlmkitError, RecipeError
from llmkit.families import resolve_model
from llmkit.methods import RUN_META, read_run
from llmkit.outputs import write_json
from llmkit.recipe import ModelSection, Recipe
from llmkit.recipe.tasks import GENERATIVE

RESULTS = "benchmark.json"  # in the run directory
SAMPLES = "benchmark-samples"  # directory of per-sample logs, with --log-samples


@dataclass(frozen=True)
class Target:
    """What to evaluate: a finished llmkit run, or a decoder named like a recipe's `model.name`."""

    name: str
    run_dir: Path | None = None
    info: dict[str, Any] | None = None  # the run's llmkit.json

    @classmethod
    def of(cls, name: str) -> Target:
        path = Path(name).expanduser()
        if path.is_dir() and (path / RUN_META).is_file():
            info, _method = read_run(path)
            if info["head"] != "causal_lm":
                raise LlmkitError(
                    f"'{name}' is a {info['task']} run on a {info['family']} model, not a language model the harness "
                    f"can score by next-token likelihood; evaluate it with `llmkit eval {name}`."
                )
            return cls(name, path, info)
        try:
            ref = resolve_model(name)
        except RecipeError as exc:
            raise _cannot_load(name, exc) from None
        family = ref.family
        if family is not None and family not in GENERATIVE:
            raise LlmkitError(
                f"'{name}' is a {ref.model_type} model, not a decoder the harness can score by next-token likelihood; "
                "fine-tune it with llmkit and evaluate the run with `llmkit eval RUN`."
            )
        return cls(name)

    def load(self) -> tuple[Any, Any]:
        """The model and tokenizer to evaluate (a run as `llmkit.models.load_trained` rebuilds it)."""
        from llmkit import models

        if self.run_dir is not None:
            trained = models.load_trained(self.run_dir)
            return _on_device(trained.model), trained.tokenizer
        return _load_named(ModelSection(name=self.name, dtype="auto"))

    def load_base(self) -> tuple[Any, Any]:
        """The model the run started from, loaded as the run loaded it (QLoRA: in 4 bits)."""
        from llmkit import models

        assert self.run_dir is not None and self.info is not None
        _info, method = read_run(self.run_dir)
        base, ctx = models.run_base(self.info)
        tokenizer = models.load_tokenizer(base)
        return _on_device(models.load_model(base, "causal_lm", tokenizer, **method.load_kwargs(ctx))), tokenizer


def _load_named(section: ModelSection) -> tuple[Any, Any]:
    from llmkit import models

    try:
        base = models.resolve_base(section, resolve_model(section.name))
        if base.family not in GENERATIVE:
            raise RecipeError(f"'{section.name}' is a {base.model_type} model, not a decoder the harness can score")
        tokenizer = models.load_tokenizer(base)
        return _on_device(models.load_model(base, "causal_lm", tokenizer)), tokenizer
    except RecipeError as exc:
        raise _cannot_load(section.name, exc) from None


def _cannot_load(name: str, exc: RecipeError) -> LlmkitError:
    return LlmkitError(f"benchmark: cannot load '{name}': {exc.problems[0].removeprefix('model.name: ')}")


def _on_device(model: Any) -> Any:
    import torch

    if torch.cuda.is_available() and model.device.type == "cpu" and not getattr(model, "is_loaded_in_4bit", False):
        model = model.to("cuda")
    return model.eval()


def _free(*objects: Any) -> None:
    del objects
    gc.collect()


def measure(load: Any, resolved: Resolved, settings: Settings, label: str) -> dict[str, Any]:
    """Load a model (`load()`), run the harness on it, free it."""
    say(f"benchmark: {label}")
    model, tokenizer = load()
    results = evaluate(model, tokenizer, resolved, settings)
    _free(model, tokenizer)
    return results


@dataclass(frozen=True)
class Outcome:
    rows: list[Row]
    written: list[Path]


def benchmark(
    model: str,
    tasks: list[str],
    *,
    num_fewshot: int | None = None,
    settings: Settings | None = None,
    baseline: bool = False,
    output: str | None = None,
) -> Outcome:
    """Run the tasks on `model` (and on its base with `baseline`); record them in the run, or in `output`."""
    require_harness()
    set_verbosity()
    settings = settings or Settings()
    if settings.fewshot_as_multiturn and not settings.apply_chat_template:
        raise LlmkitError("--fewshot-as-multiturn renders the examples as chat turns; add --apply-chat-template.")
    target = Target.of(model)
    if baseline and target.run_dir is None:
        raise LlmkitError(
            f"--baseline compares a run with the model it was trained from, and '{model}' is not an llmkit run "
            f"(it has no {RUN_META}); benchmark the two models one after the other instead."
        )
    json_path = Path(output) if output else (target.run_dir / RESULTS if target.run_dir else None)
    if json_path is not None and not json_path.parent.is_dir():
        raise LlmkitError(f"--output: the directory '{json_path.parent}' does not exist.")
    resolved = resolve(parse(tasks, num_fewshot))
    names = [shown for _, shown in resolved.items]

    tuned = measure(target.load, resolved, settings, f"{model} on {', '.join(str(b) for b, _ in resolved.items)}")
    found = report.rows(tuned, names)
    base = None
    if baseline:
        base = measure(target.load_base, resolved, settings, f"the base model of {model}")
        found = report.with_baseline(found, report.rows(base, names))

    written: list[Path] = []
    if json_path is not None:
        record = report.record(found, settings.record(), models_of(target, baseline))
        record["tasks"] = resolved.sources
        write_json(json_path, report.merge_into(json_path, record))
        written.append(json_path)
        if settings.log_samples:
            samples_dir = json_path.parent / (SAMPLES if target.run_dir else f"{json_path.stem}-samples")
            written += report.write_samples(samples_dir, tuned.get("samples", {}))
            if base is not None:
                written += report.write_samples(samples_dir, base.get("samples", {}), "-baseline")
    if target.run_dir is not None:
        report.record_in_run(target.run_dir, found, provenance(resolved, settings, models_of(target, baseline)))
    return Outcome(found, written)


def models_of(target: Target, baseline: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": target.name}
    if baseline and target.info is not None:
        out["baseline"] = target.info["base_model"]["name"]
    return out


def provenance(resolved: Resolved, settings: Settings, models: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records about one benchmark: the harness version, tasks and their sources, settings."""
    from importlib import metadata

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "lm_eval": metadata.version("lm_eval"),
        "models": models,
        "tasks": {shown: {"asked": str(b), **resolved.sources[shown]} for b, shown in resolved.items},
        "settings": settings.record(),
    }


# ---------------------------------------------------------------- a recipe's evaluation.benchmarks, after training


def prepare(recipe: Recipe) -> Resolved | None:
    """The recipe's `evaluation.benchmarks`, resolved before training starts (so a bad task costs no training), or
    None when it lists none."""
    listed = recipe.evaluation.benchmarks if recipe.evaluation is not None else []
    if not listed:
        return None
    key = "evaluation.benchmarks"
    return resolve(parse(listed, key=key), key=key)


def after_training(env: Any, result: Any, resolved: Resolved) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trained model (still in memory) and its base on the recipe's benchmarks: benchmark.json in the run, and
    what metrics.json (`benchmarks`) and the manifest (`benchmarks`) record."""
    from llmkit import models
    from llmkit.run import method_context

    settings = Settings(limit=env.recipe.evaluation.benchmark_limit)
    names = [shown for _, shown in resolved.items]
    say(f"benchmark: the trained model on {', '.join(str(b) for b, _ in resolved.items)}")
    found = report.rows(evaluate(result.built.model, result.tokenizer, resolved, settings), names)

    def load_base() -> tuple[Any, Any]:
        tokenizer = env.tokenizer()
        kwargs = env.recipe.method.load_kwargs(method_context(env, head="causal_lm"))
        return _on_device(models.load_model(env.base, "causal_lm", tokenizer, **kwargs)), tokenizer

    base = measure(load_base, resolved, settings, f"the base model {env.recipe.model.name}")
    found = report.with_baseline(found, report.rows(base, names))
    say("benchmark:\n" + report.table(found))
    run_models = {"model": "this run", "baseline": env.recipe.model.name}
    record = report.record(found, settings.record(), run_models)
    write_json(env.run.work / RESULTS, {**record, "tasks": resolved.sources})
    return report.in_metrics(found), provenance(resolved, settings, run_models)
