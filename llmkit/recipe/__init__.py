"""The recipe: schema (`schema`, `sections`, `training`, `trl`, `rl`, `distill`), the task and format registries
(`tasks`, `formats`), reading YAML (`loading`), error wording (`wording`) and the rendered reference (`explain`,
`matrix`).

Torch-free throughout: `llmkit validate` and `llmkit explain` never import torch.
"""

from llmkit.recipe.distill import DistillSection
from llmkit.recipe.rl import GrpoSection, RewardSection, RlooSection
from llmkit.recipe.schema import TASK_SECTIONS, Recipe
from llmkit.recipe.sections import DataSection, DataSource, ModelSection
from llmkit.recipe.task_sections import ClassificationSection, EvaluationSection, GenerationSection
from llmkit.recipe.tasks import TASKS, TaskSpec
from llmkit.recipe.training import TrainingSection
from llmkit.recipe.trl import DpoSection, KtoSection, OrpoSection

__all__ = [
    "TASKS",
    "TASK_SECTIONS",
    "ClassificationSection",
    "DataSection",
    "DataSource",
    "DistillSection",
    "DpoSection",
    "EvaluationSection",
    "GenerationSection",
    "GrpoSection",
    "KtoSection",
    "ModelSection",
    "OrpoSection",
    "Recipe",
    "RewardSection",
    "RlooSection",
    "TaskSpec",
    "TrainingSection",
]
