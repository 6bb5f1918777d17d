"""The method × family × task compatibility matrix, computed from the declarations `llmkit validate` checks
(each method's `families`, `tasks`, `model_types` and `excluded`), so the table in docs/methods.md cannot drift
from the code: a test compares them, and the model-level tests run every supported cell.

`python -m llmkit.recipe.matrix` prints the table.
"""

from __future__ import annotations

from llmkit.families import FAMILIES, FAMILY_HEADS
from llmkit.methods import METHODS
from llmkit.methods.base import MethodConfig
from llmkit.recipe.distill import family_student_task
from llmkit.recipe.tasks import TASKS, head_task

TASK_NAMES = ("sft", "classification", "seq2seq", "dpo", "reward", "grpo", "distill")


def supported(method: type[MethodConfig], family: str, task: str) -> bool:
    if task == "distill":  # the student trains under its own task's head as well
        student = family_student_task(family)
        return method.why_not(family, task) is None and supported(method, family, student)
    return family in TASKS[task].families and method.why_not(family, task) is None


def families_for(method: type[MethodConfig], task: str) -> list[str]:
    return [f for f in FAMILIES if supported(method, f, task)]


def model_level_cases() -> list[tuple[str, str, str]]:
    """(method, family, head) for every head of every family the method supports, whether or not a task trains that
    family on that head yet (T5 has a classifier head): what the model-level tests train, save and reload."""
    cases = {
        (name, family, head)
        for name, method in METHODS.items()
        for family, heads in FAMILY_HEADS.items()
        for head in heads
        if method.why_not(family, head_task(head)) is None
    }
    return sorted(cases)


def markdown() -> str:
    """The matrix as a markdown table, then every refusal with its reason."""
    header = [f"`{t}`" for t in TASK_NAMES]
    lines = [
        "| method | " + " | ".join(header) + " | merge |",
        "| --- | " + " | ".join("---" for _ in TASK_NAMES) + " | --- |",
    ]
    for name, method in METHODS.items():
        cells = [", ".join(families_for(method, t)) or "—" for t in TASK_NAMES]
        merge = "full model" if method.saves_full_model else ("yes" if method.mergeable else "no")
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {merge} |")
    lines += [
        "",
        "`dpo` stands for the preference tasks (`orpo` and `kto` take the same methods), `grpo` for the online ones "
        "(`rloo` takes the same). A `distill` student is a "
        "classifier for bert, a rationale student for t5 and a causal LM (or a classifier) for gpt2 and llama; "
        "each cell holds where the method fits that student's own task too.",
        "",
        "Refused combinations (each is a validation error before anything loads):",
        "",
    ]
    for name, method in METHODS.items():
        grouped: dict[str, list[str]] = {}
        for (family, task), why in method.excluded.items():
            where = " × ".join(p for p in (family, task) if p != "*") if "*" in (family, task) else f"{family} × {task}"
            grouped.setdefault(why, []).append(where)
        reasons = [f"{', '.join(where)}: {why}" for why, where in grouped.items()]
        if method.model_types is not None:
            reasons.append(f"model types {', '.join(method.model_types)} only (peft's list)")
        reasons += [f"model type {model_type}: {why}" for model_type, why in method.refused_model_types.items()]
        if reasons:
            lines.append(f"- `{name}`: " + "; ".join(reasons) + ".")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
