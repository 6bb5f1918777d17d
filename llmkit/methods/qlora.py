"""QLoRA: the base weights in bitsandbytes 4-bit (NF4 or FP4), LoRA on top (Dettmers et al., 2023).

Every LoRA key applies (r, lora_alpha, target_modules, use_dora, use_rslora, ...); this block adds the quantisation,
under the names of transformers' BitsAndBytesConfig.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llmkit import notices
from llmkit.extras import missing
from llmkit.methods.base import MethodContext
from llmkit.methods.heads import head_module_names
from llmkit.methods.lora import LoraMethod


class QLoraMethod(LoraMethod):
    """LoRA over a base quantised to bitsandbytes 4-bit (Dettmers et al., 2023); every lora key applies.
    `llmkit merge` dequantises the base and folds the adapter into full-precision weights."""

    name: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: NormalFloat4 or FP4")
    bnb_4bit_use_double_quant: bool = Field(
        True, description="quantise the quantisation constants too (~0.4 bits/weight less)"
    )
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype the 4-bit weights are dequantised to for each matmul"
    )

    @model_validator(mode="after")
    def _needs_bitsandbytes(self) -> QLoraMethod:
        problem = missing("bitsandbytes")
        if problem:
            raise ValueError(f"{problem} (or use method lora)")
        return self

    def load_kwargs(self, ctx: MethodContext) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        notices.release("bitsandbytes")  # 4-bit is used: what bitsandbytes said as it loaded is about this run

        # Trainer never moves a quantised model, so on a GPU it must load onto this process's device.
        device = {"device_map": {"": torch.cuda.current_device()}} if torch.cuda.is_available() else {}
        return {
            **device,
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=self.bnb_4bit_quant_type,
                bnb_4bit_use_double_quant=self.bnb_4bit_use_double_quant,
                bnb_4bit_compute_dtype=getattr(torch, self.bnb_4bit_compute_dtype),
                # A new classification head must train in full precision; naming any module drops transformers'
                # default skip list, so the LM head is named too.
                llm_int8_skip_modules=["lm_head", *head_module_names(ctx.head)],
            ),
        }

    def _fan_in_fan_out(self, ctx: MethodContext) -> bool:
        return False  # GPT-2's Conv1D layers become ordinary (out, in) Linear4bit layers when quantised

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model, prepare_model_for_kbit_training

        keep_4bit_training_layout(model)
        release_checkpoint_mapping(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, self.upstream_config(ctx))

    def reload(self, base_model: Any, run_dir: Any) -> Any:
        keep_4bit_training_layout(base_model)
        release_checkpoint_mapping(base_model)  # predict / eval hold the 4-bit base only, as training does
        return super().reload(base_model, run_dir)

    def merged(self, base_model: Any, run_dir: Any) -> Any:
        """Dequantise the 4-bit base exactly (the weights training saw), then merge in full precision; merging
        into the 4-bit layers instead would re-quantise W + BA and lose most of the update."""
        keep_4bit_training_layout(base_model)
        model = super().merged(base_model.dequantize(), run_dir)
        if model.config.model_type == "gpt2":
            _linear_to_conv1d(model)
        return model


def keep_4bit_training_layout(model: Any) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its CPU inference kernel.

    On CPUs with avx512-bf16, bitsandbytes 0.50 repacks a Linear4bit's weights on its first forward in eval mode
    without grad (an evaluation pass), and from then on computes it with a kernel that has no backward: every later
    training step gets missing or wrong LoRA gradients, silently (docs/methods.md has the measured error). The switch is
    a per-layer attribute bitsandbytes sets from the CPU's features; turning it off keeps the dequantise-and-matmul
    path, which is exact for training and is what every other CPU uses. tests/test_methods_qlora.py pins both.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def release_checkpoint_mapping(model: Any) -> None:
    """Give the weights that stay in full precision (embeddings, norms, heads) memory of their own, so the
    memory-mapped safetensors checkpoint is unmapped.

    On CPU, transformers loads those weights as views into the mapped file; while one view lives, every page of the
    file that quantisation read (the full-precision originals of the 4-bit weights) stays mapped and resident, and
    QLoRA would hold the whole float32 checkpoint as well as its 4-bit copy (docs/memory.md has the measurements).
    """
    import torch

    for param in model.parameters():  # each once: tied embeddings are one Parameter
        if type(param).__name__ != "Params4bit" and param.device.type == "cpu":
            param.data = param.data.clone()
    for module in model.modules():
        for name, buffer in module.named_buffers(recurse=False):
            if isinstance(buffer, torch.Tensor) and buffer.device.type == "cpu":
                module._buffers[name] = buffer.clone()


def _linear_to_conv1d(model: Any) -> None:
    """GPT-2 keeps its projections as Conv1D (weights stored transposed); dequantising gave Linear layers, so
    convert them back, or the merged checkpoint would not load into GPT2LMHeadModel."""
    import torch
    from transformers.pytorch_utils import Conv1D

    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("c_attn", "c_proj", "c_fc", "q_attn"):
            conv = Conv1D(module.out_features, module.in_features)
            with torch.no_grad():
                conv.weight.copy_(module.weight.t())
                conv.bias.copy_(module.bias)
            parent = model.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[-1], conv.to(module.weight.dtype))
