"""Preference tuning on TRL's trainers: `task: dpo` (DPOTrainer), `orpo` (ORPOTrainer) and `kto` (KTOTrainer).

What llmkit adds to TRL: the pairs (`llmkit.data.preference`), the reference model, and a held-out preference
accuracy before and after. The reference is built here because trl 1.16, given a model object and no `ref_model`,
reloads the reference from `config._name_or_path` — empty or wrong for a model llmkit loaded (GGUF cache,
packaged model) — and fails with an unrelated "Repo id" error. LoRA needs no second copy: the base with the
adapter disabled is the reference.
"""

from __future__ import annotations

from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from llmkit import chunked, chunked_orpo, models
from llmkit.console import say
from llmkit.data.cache import key_for
from llmkit.data.preference import build_pairs, check_identical, tokenize_pair
from llmkit.data.prepared import Prepared, prepare_splits
from llmkit.fit import fit
from llmkit.heldout import weigh_eval_loss
from llmkit.run import RunEnv, TaskResult, build_model, total_steps, training_args

REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def _trl(task: str) -> tuple[type, type]:
    """The TRL config and trainer classes of a preference task (imported only when one runs)."""
    if task == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    if task == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOConfig, ORPOTrainer
    from trl import DPOConfig, DPOTrainer

    return DPOConfig, DPOTrainer


def prepare(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """Rows → pairs in TRL's layout, checked and length-filtered."""
    data = env.recipe.data
    return prepare_splits(
        data,
        lambda rows: build_pairs(rows, data, tokenizer, check=False),
        f"(all identical or longer than data.max_length={data.max_length})",
        unit="preference pairs",
        key=key_for(env.recipe, tokenizer, head=env.head),
        finish=lambda stats: check_identical(stats, data.identical_pairs),
    )


def run(env: RunEnv) -> TaskResult:
    task, data = env.recipe.task, env.recipe.data
    config_class, trainer_class = _trl(task)
    datasets.disable_progress_bars()  # TRL maps the data in several passes; llmkit's own lines say what came of it
    tokenizer = env.tokenizer()
    prepared = prepare(env, tokenizer)
    train, evaluation = prepared.train, prepared.held_out or None
    held_out = evaluation.to_list() if evaluation is not None else None  # scored pair by pair, before and after
    if task == "kto":  # KTO learns from answers marked good or bad: each pair gives one of each
        from trl.data_utils import unpair_preference_dataset

        train = unpair_preference_dataset(train)
        evaluation = unpair_preference_dataset(evaluation) if evaluation is not None else None

    section = getattr(env.recipe, task)
    options = {**trl_defaults(env), **(section.kwargs() if section else {}), "max_length": data.max_length}
    args = training_args(env, config_class, evaluate=bool(held_out), **options)
    built = build_model(env, tokenizer, total_steps=total_steps(len(train), args))
    model = built.model
    kwargs: dict[str, Any] = {}
    if task != "orpo":  # ORPO has no reference model
        kwargs["ref_model"] = None if is_peft(model) else frozen_reference(env, tokenizer)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        **kwargs,
    )
    weigh_eval_loss(trainer, loss_units(task))
    wanted = env.recipe.training.chunked_loss
    if task == "orpo" and chunked.enabled(trainer, model, wanted, chunked_orpo.unsupported(trainer)):
        chunked_orpo.attach(trainer, model)  # DPO and KTO: TRL's own fused LM head
    if task != "orpo":
        copy = "a frozen copy of the base model"
        probe = tokenize_pair(prepared.train[0], tokenizer)
        probe_ids = probe["prompt_ids"] + probe["chosen_ids"]
        say(f"reference: {use_disabled_adapter(model, probe_ids) if is_peft(model) else copy}")

    metrics: dict[str, Any] = {}
    if held_out:
        metrics["preference_accuracy_before"] = preference_accuracy(model, held_out, tokenizer, data.max_length)
        say(f"held-out preference accuracy before training: {metrics['preference_accuracy_before']:.3f}")
    metrics.update(fit(trainer, env, built))  # with TRL's held-out rewards before and after
    metrics.update(_last_train_rewards(trainer.state.log_history))
    if held_out:
        metrics["preference_accuracy"] = preference_accuracy(model, held_out, tokenizer, data.max_length)
        accuracy = metrics.get("eval_rewards/accuracies")
        say(
            f"held-out preference accuracy after training:  {metrics['preference_accuracy']:.3f} "
            f"(before: {metrics['preference_accuracy_before']:.3f})"
            + (f"; reward accuracy {accuracy:.3f}" if accuracy is not None else "")
        )
    if is_peft(model) and "ref" in model.peft_config:
        model.delete_adapter("ref")  # TRL's frozen copy of the initial adapter is not part of the result
    return TaskResult(metrics, built, tokenizer, data=prepared.sources)


def loss_units(task: str) -> Any:
    """What TRL's per-batch loss is a mean over: pairs (DPO's and RewardTrainer's batch holds the chosen rows, then
    the rejected ones; ORPO's the chosen ones as their own tensor), or answers for KTO."""
    if task == "kto":
        return lambda inputs: torch.ones(len(inputs["label"]), dtype=torch.long)
    if task == "orpo":
        return lambda inputs: torch.ones(len(inputs["chosen_input_ids"]), dtype=torch.long)
    return lambda inputs: torch.ones(len(inputs["input_ids"]) // 2, dtype=torch.long)


def trl_defaults(env: RunEnv) -> dict[str, Any]:
    """TRL's configs turn on activation checkpointing and bf16 by default; llmkit keeps TrainingArguments' defaults
    for every task, so a `training:` block means the same for sft and dpo (and bf16 autocast is slow on CPUs)."""
    set_keys = set(env.recipe.training.kwargs())
    defaults: dict[str, Any] = {"bf16": False}
    if not {"gradient_checkpointing", "activation_checkpointing"} & set_keys:
        defaults["activation_checkpointing"] = False
    if env.recipe.task == "orpo":  # its batches have no `input_ids`, so the Trainer cannot count tokens
        defaults["include_num_input_tokens_seen"] = "no"
    return defaults


def frozen_reference(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Any:
    """A second copy of the base model, frozen: the reference for full fine-tuning (and methods without an adapter
    to switch off)."""
    reference = models.load_model(env.base, env.head, tokenizer)
    reference.requires_grad_(False)
    return reference.eval()


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


@torch.no_grad()
def use_disabled_adapter(model: Any, probe_ids: list[int]) -> str:
    """Make the base with the adapter disabled the reference, if that is the initial policy (checked on `probe_ids`).

    TRL (DPO, GRPO) copies a model's adapter into a frozen "ref" adapter, meant for re-training an existing adapter. A
    fresh LoRA adapter is the identity (B = 0), so disabling it gives the same reference with no copy; an adapter that
    changes the output from the start (prompt tuning, PiSSA init) keeps TRL's copy, which is the initial policy.
    """
    probe = torch.tensor([probe_ids[:64]], device=model.device)
    was_training = model.training
    model.eval()  # no dropout: the two outputs differ only by the adapter
    with_adapter = model(input_ids=probe).logits
    with model.disable_adapter():
        without = model(input_ids=probe).logits
    model.train(was_training)
    if "ref" in model.peft_config and torch.allclose(with_adapter, without):
        model.delete_adapter("ref")
    if "ref" in model.peft_config:
        return "a frozen copy of the initial adapter (it changes the base model's output from the start)"
    return "the base model with the adapter disabled (no second copy of the weights)"


@torch.no_grad()
def preference_accuracy(
    model: Any, pairs: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int, batch: int = 8
) -> float:
    """Share of pairs whose chosen answer the model finds more likely than the rejected one (summed log-probs of the
    answer tokens, truncated to max_length as in training). Unlike DPO's reward accuracy, which is 0 before any
    training by construction, this says how the model ranks the pairs before and after."""
    was_training = model.training
    model.eval()
    wins = 0
    for start in range(0, len(pairs), batch):
        rows = [tokenize_pair(pair, tokenizer) for pair in pairs[start : start + batch]]
        chosen = _answer_logps(model, rows, "chosen_ids", max_length, tokenizer.pad_token_id)
        rejected = _answer_logps(model, rows, "rejected_ids", max_length, tokenizer.pad_token_id)
        wins += int((chosen > rejected).sum())
    model.train(was_training)
    return wins / len(pairs)


def _answer_logps(model: Any, rows: list[dict[str, list[int]]], key: str, max_length: int, pad_id: int) -> Any:
    sequences = [(row["prompt_ids"] + row[key])[:max_length] for row in rows]
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    answer = torch.zeros_like(input_ids, dtype=torch.bool)
    for i, (row, seq) in enumerate(zip(rows, sequences, strict=True)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        answer[i, len(row["prompt_ids"]) : len(seq)] = True
    device = model.device
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits[:, :-1].float()
    targets = input_ids[:, 1:].to(device)
    token_logps = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * answer[:, 1:].to(device)).sum(-1).cpu()


def _last_train_rewards(history: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged training rewards (means over the last logging window), as `train_rewards/...`."""
    for entry in reversed(history):
        if any(key in entry for key in REWARD_KEYS):
            return {f"train_{key}": entry[key] for key in REWARD_KEYS if key in entry}
    return {}
