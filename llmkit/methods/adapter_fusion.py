"""AdapterFusion: several trained bottleneck adapters stay frozen; a fusion attention over their outputs (and a task
head) trains (Pfeiffer et al., 2021). Stage one is ordinary `method: adapter` runs on the same base model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from llmkit.methods.adapter import NO_PLACES, NOT_LINEAR
from llmkit.methods.base import MethodConfig, MethodContext

LAYOUT = "fusion_adapters.json"  # the fused adapters' settings, so a fusion run reloads without its inputs


class AdapterFusionMethod(MethodConfig):
    """AdapterFusion (Pfeiffer et al., 2021): an attention over the outputs of several frozen `adapter` runs trains,
    with the task head. The run saves the fused adapters too, so it reloads on its own."""

    name: Literal["adapter_fusion"] = "adapter_fusion"
    adapters: list[str] = Field(description="directories of finished `method: adapter` runs on this recipe's model")

    merge_note = NOT_LINEAR
    refused_model_types = NO_PLACES

    @field_validator("adapters")
    @classmethod
    def _several(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError("adapter_fusion fuses at least two adapter runs; for one, train it with method adapter")
        if len(set(value)) != len(value):
            raise ValueError("an adapter run is listed twice")
        return value

    def adapter_runs(self, ctx: MethodContext) -> list[dict[str, Any]]:
        """Each adapter run's `method` block, after checking it is a finished adapter run on this base model.
        Checked at train start, not at validate: the runs may be the outputs of recipes not yet trained."""
        blocks = []
        for path in self.adapters:
            meta = Path(path) / "llmkit.json"
            if not meta.is_file():
                raise ValueError(f"adapters: '{path}' is not a finished llmkit run (it has no llmkit.json)")
            info = json.loads(meta.read_text())
            if info["method"]["name"] != "adapter":
                raise ValueError(f"adapters: '{path}' was trained with method {info['method']['name']}, not adapter")
            base = info["base_model"]["name"]
            if ctx.model_name is not None and not _same_model(base, ctx.model_name):
                raise ValueError(
                    f"adapters: '{path}' was trained on '{base}', but this recipe's model is '{ctx.model_name}'"
                )
            blocks.append(info["method"])
        kinds = {b["architecture"] for b in blocks}
        if len(kinds) > 1:
            raise ValueError(
                f"adapters: all fused adapters must share one architecture, got {' and '.join(sorted(kinds))}"
            )
        return blocks

    def upstream_config(self, ctx: MethodContext) -> Any:
        self.adapter_runs(ctx)
        return None

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from llmkit.adapters.bottleneck import adapter_parameter_names
        from llmkit.methods.heads import head_parameter_names
        from llmkit.partial import train_only

        blocks = self.adapter_runs(ctx)
        places = _insert_fusion(model, blocks)
        for index, path in enumerate(self.adapters):
            _load_adapter(model, places, index, Path(path))
        fusion = [n for n in adapter_parameter_names(model) if ".adapters." not in n]
        model = train_only(model, fusion + head_parameter_names(model, ctx.head))
        model._llmkit_fusion_layout = blocks  # saved with the run, see save()
        return model

    def save(self, model: Any, directory: Any) -> None:
        from llmkit.adapters.bottleneck import adapter_parameter_names
        from llmkit.partial import save_tensors, trainable_names

        names = dict.fromkeys(adapter_parameter_names(model) + trainable_names(model))
        save_tensors(model, names, directory)
        (Path(directory) / LAYOUT).write_text(json.dumps(model._llmkit_fusion_layout, indent=2) + "\n")

    def reload(self, base_model: Any, run_dir: Any) -> Any:
        from llmkit.partial import load_tensors

        blocks = json.loads((Path(run_dir) / LAYOUT).read_text())
        _insert_fusion(base_model, blocks)
        base_model._llmkit_fusion_layout = blocks
        return load_tensors(base_model, run_dir)


def _same_model(a: str, b: str) -> bool:
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def _insert_fusion(model: Any, blocks: list[dict[str, Any]]) -> list[str]:
    from llmkit.adapters.bottleneck import Bottleneck, Fusion, insert

    def build(width: int) -> Fusion:
        adapters = [Bottleneck(width, b["reduction_factor"], b["activation"]) for b in blocks]
        return Fusion(adapters, width)

    return insert(model, blocks[0]["architecture"], build)


def _load_adapter(model: Any, places: list[str], index: int, run_dir: Path) -> None:
    """Copy adapter run `run_dir`'s weights into slot `index` of every fusion layer. Places are matched by their
    name's common suffix, so an adapter trained under one head (T5ForConditionalGeneration: `encoder.block...`)
    fits another (T5ForSequenceClassification: `transformer.encoder.block...`)."""
    import torch
    from safetensors.torch import load_file

    from llmkit.adapters.bottleneck import ADAPTER
    from llmkit.partial import WEIGHTS

    saved = load_file(str(run_dir / WEIGHTS))
    params = dict(model.named_parameters())
    filled = set()
    for key, tensor in saved.items():
        if f".{ADAPTER}." not in key:
            continue  # that run's task head
        place, rest = key.split(f".{ADAPTER}.")
        match = [p for p in places if p == place or p.endswith("." + place) or place.endswith("." + p)]
        target = f"{match[0]}.{ADAPTER}.adapters.{index}.{rest}" if len(match) == 1 else None
        if target not in params or params[target].shape != tensor.shape:
            raise ValueError(f"adapters: '{run_dir}' does not fit this model (its '{key}' has no counterpart)")
        with torch.no_grad():
            params[target].copy_(tensor)
        filled.add(match[0])
    if filled != set(places):
        raise ValueError(f"adapters: '{run_dir}' has no adapter at {len(set(places) - filled)} of this model's places")
