"""`task: kto`: the preference runner of `llmkit.tasks.dpo` on TRL's KTOTrainer (same data, same outputs)."""

from llmkit.tasks.dpo import prepare, run

__all__ = ["prepare", "run"]
