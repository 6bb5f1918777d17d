"""BitFit: train only the bias terms, plus a new task head if there is one (Ben Zaken et al., 2022)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from llmkit.methods.base import MethodConfig, MethodContext

_NO_BIAS = "it trains only bias terms, and {} models have none"


class BitFitMethod(MethodConfig):
    """BitFit (Ben Zaken et al., 2022): only the bias terms (and a new task head) train; every weight matrix stays
    bit-identical. The run saves only what trained; `llmkit merge` writes the full model."""

    name: Literal["bitfit"] = "bitfit"

    families = ("bert", "gpt2")
    # Qwen2 has attention biases, but an update of a few projection biases is not BitFit; the family is refused.
    excluded: ClassVar[dict[tuple[str, str], str]] = {
        ("llama", "*"): _NO_BIAS.format("Llama-style"),
        ("t5", "*"): _NO_BIAS.format("T5"),
    }
    mergeable = True
    trains_base_weights = True  # the biases are the base's own

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from llmkit.methods.heads import head_parameter_names
        from llmkit.partial import train_only

        biases = [name for name, _ in model.named_parameters() if name.endswith(".bias")]
        if not biases:
            raise ValueError(f"bitfit: this {ctx.model_type} model has no bias terms to train; use lora or ia3")
        return train_only(model, biases + head_parameter_names(model, ctx.head))

    def save(self, model: Any, directory: Any) -> None:
        from llmkit.partial import save_tensors, trainable_names

        save_tensors(model, trainable_names(model), directory)

    def reload(self, base_model: Any, run_dir: Any) -> Any:
        from llmkit.partial import load_tensors

        return load_tensors(base_model, run_dir)

    def merged(self, base_model: Any, run_dir: Any) -> Any:
        return self.reload(base_model, run_dir)  # the trained biases simply replace the base's
