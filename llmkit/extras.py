"""Optional dependencies (pyproject's extras): what each brings, and the one sentence that installs a missing one.

Not every user needs GGUF files, 4-bit quantisation, hub metrics or lm-evaluation-harness, so those packages are
extras; code that needs one asks `missing(...)` first and turns the answer into its own error, naming the recipe key
or command that needs it.
"""

from __future__ import annotations

import importlib.util

# import name → (extra that installs it, what in llmkit needs it)
EXTRAS = {
    "gguf": ("gguf", "a .gguf model (and packaged:smollm2-135m-instruct)"),
    "bitsandbytes": ("qlora", "qlora"),
    "evaluate": ("metrics", "evaluation.extra_metrics"),
    "lm_eval": ("eval", "llmkit benchmark (and evaluation.benchmarks)"),
    "liger_kernel": ("liger", "training.use_liger_kernel"),
}


def missing(module: str) -> str | None:
    """None if `module` is installed; else what needs it and how to install it, as a sentence without a subject."""
    if importlib.util.find_spec(module) is not None:
        return None
    extra, purpose = EXTRAS[module]
    return f"{purpose} needs the {module} package: pip install 'llmkit[{extra}]'"
