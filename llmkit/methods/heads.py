"""The task head: the modules a loaded model gets fresh, randomly initialised, so every method must train them.

peft keeps only `classifier` and `score` trainable for sequence classification; T5 and BART name their head
`classification_head` and DistilBERT adds a `pre_classifier`, which would otherwise stay random and frozen.
"""

from __future__ import annotations

from typing import Any

# Top-level module names of the sequence-classification heads in transformers' *ForSequenceClassification models.
SEQ_CLS_HEADS = ("pre_classifier", "classifier", "score", "classification_head")


def head_module_names(head: str) -> list[str]:
    """Names a method passes to peft's `modules_to_save` (names a model lacks are ignored) for this head."""
    return list(SEQ_CLS_HEADS) if head == "seq_cls" else []


def head_parameter_names(model: Any, head: str) -> list[str]:
    """The parameters of the task head present in `model` (empty for LM heads, which are pretrained)."""
    names = head_module_names(head)
    return [n for n, _ in model.named_parameters() if n.split(".")[0] in names]
