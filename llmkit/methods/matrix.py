"""The method × family × task compatibility matrix, computed from the declarations `llmkit validate` checks
(each method's `families`, `tasks`, `model_types` and `excluded`), so the table in docs/methods.md cannot drift
from the code: a test compares them, and the model-level tests run every supported cell.

`python -m llmkit.methods.matrix` prints the table.
"""

from __future__ import annotations

from llmkit.methods import METHODS
from llmkit.methods.base import ALL_FAMILIES, MethodConfig
from llmkit.tasks import TASKS

TASK_NAMES = ("sft", "classification", "seq2seq", "dpo", "distill")
# For tasks not in this build's task registry yet: the head each will load and the families it is planned for.
PLANNED = {
    "sft": ("causal_lm", ("gpt2", "llama")),
    "classification": ("seq_cls", ALL_FAMILIES),
    "seq2seq": ("seq2seq_lm", ("t5",)),
    "dpo": ("causal_lm", ("gpt2", "llama")),
    "distill": ("causal_lm", ("gpt2", "llama")),
}


# What a distillation student of each family is: a classifier (bert), a rationale student (t5), a causal LM.
STUDENT_TASK = {"bert": "classification", "t5": "seq2seq", "gpt2": "sft", "llama": "sft"}


def task_head(task: str) -> str:
    return TASKS[task].head if task in TASKS else PLANNED[task][0]


def task_families(task: str) -> tuple[str, ...]:
    return TASKS[task].families if task in TASKS else PLANNED[task][1]


def supported(method: type[MethodConfig], family: str, task: str) -> bool:
    if task == "distill" and family in STUDENT_TASK:  # the student trains under its own task's head as well
        return method.why_not(family, task) is None and supported(method, family, STUDENT_TASK[family])
    return family in task_families(task) and method.why_not(family, task) is None


def families_for(method: type[MethodConfig], task: str) -> list[str]:
    return [f for f in ALL_FAMILIES if supported(method, f, task)]


# The heads each family has in transformers, and the task that trains each head.
FAMILY_HEADS = {
    "bert": ("seq_cls",),
    "gpt2": ("causal_lm", "seq_cls"),
    "llama": ("causal_lm", "seq_cls"),
    "t5": ("seq2seq_lm", "seq_cls"),
}
HEAD_TASK = {"causal_lm": "sft", "seq_cls": "classification", "seq2seq_lm": "seq2seq"}


def model_level_cases() -> list[tuple[str, str, str]]:
    """(method, family, head) for every head of every family the method supports, whether or not a task trains that
    family on that head yet (T5 has a classifier head): what the model-level tests train, save and reload."""
    cases = {
        (name, family, head)
        for name, method in METHODS.items()
        for family, heads in FAMILY_HEADS.items()
        for head in heads
        if method.why_not(family, HEAD_TASK[head]) is None
    }
    return sorted(cases)


def markdown() -> str:
    """The matrix as a markdown table, then every refusal with its reason."""
    header = [f"`{t}`" + ("" if t in TASKS else " †") for t in TASK_NAMES]
    lines = [
        "| method | " + " | ".join(header) + " | merge |",
        "| --- | " + " | ".join("---" for _ in TASK_NAMES) + " | --- |",
    ]
    for name, method in METHODS.items():
        cells = [", ".join(families_for(method, t)) or "—" for t in TASK_NAMES]
        merge = "full model" if method.saves_full_model else ("yes" if method.mergeable else "no")
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {merge} |")
    planned = [t for t in TASK_NAMES if t not in TASKS]
    lines += [""]
    if planned:
        lines += [
            "† not a task in this build yet; the cell lists what the method declares, and the model-level tests "
            "train, save and reload it on that head.",
            "",
        ]
    lines += [
        "`dpo` stands for the preference tasks (`orpo` and `kto` take the same methods). A `distill` student is a "
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
