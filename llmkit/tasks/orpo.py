"""`task: orpo`: the preference runner of `llmkit.tasks.dpo` on TRL's ORPOTrainer (same data, same outputs)."""

from llmkit.tasks.dpo import prepare, run

__all__ = ["prepare", "run"]
