"""Knowledge distillation: a frozen teacher's soft targets (`loss`, `teacher`, `cache`, `trainer`) and rationale
distillation, where a teacher writes rationales once and a student learns label and rationale (`rationale`).

The recipe's `distill:` section is `llmkit.tasks.sections.DistillSection`; the runner is `llmkit.tasks.distill`.
"""
