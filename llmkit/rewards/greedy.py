"""Held-out rewards of a policy, decoded greedily: what a GRPO run is measured by before and after training.

TRL's own evaluation samples (at the training temperature) and repeats every prompt num_generations times; a greedy
completion per prompt is cheaper and says what the model now answers. Completions end where TRL ends them (at the
first of the tokenizer's and the generation config's EOS ids, which is kept), and the rewards are called with the
arguments TRL passes, so a reward means the same here as in training.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch

from llmkit.data.prompts import prompt_ids
from llmkit.generation import generate_ids
from llmkit.rewards import Rewards, mean


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a completion, as TRL's GRPOTrainer collects them: the generation config's and the
    tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return ids if tokenizer.eos_token_id in ids else [tokenizer.eos_token_id, *ids]


def cut_at_stop(generated: torch.Tensor, stops: Sequence[int]) -> list[list[int]]:
    """Each row up to and including its first stop id (the whole row if it has none): TRL's completion mask."""
    is_stop = torch.isin(generated, torch.tensor(list(stops), device=generated.device))
    ends = torch.where(is_stop.any(dim=1), is_stop.int().argmax(dim=1), generated.size(1) - 1)
    return [row[: int(end) + 1].tolist() for row, end in zip(generated.cpu(), ends.cpu(), strict=True)]


@torch.no_grad()
def complete(
    model: Any, tokenizer: Any, prompts: Sequence[Any], max_new_tokens: int, batch_size: int = 8
) -> tuple[list[list[int]], list[Any]]:
    """Greedy completion ids and completions (text, or the assistant's message for a chat prompt), as TRL's reward
    functions receive them."""
    config = copy.deepcopy(model.generation_config)
    config.update(do_sample=False, temperature=None, top_p=None, top_k=None, max_new_tokens=max_new_tokens)
    config.eos_token_id, config.pad_token_id = stop_ids(model, tokenizer), tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    completion_ids: list[list[int]] = []
    ids = [prompt_ids(p, tokenizer) for p in prompts]
    for new in generate_ids(model, tokenizer, ids, batch_size, generation_config=config):
        completion_ids += cut_at_stop(new, config.eos_token_id)
    model.train(was_training)
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    completions = [
        [{"role": "assistant", "content": text}] if isinstance(p, list) else text
        for p, text in zip(prompts, texts, strict=True)
    ]
    return completion_ids, completions


def evaluate(
    model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], rewards: Rewards, max_new_tokens: int
) -> dict[str, float]:
    """Mean reward of each reward, their weighted sum (a reward's None counts as 0, as TRL's nansum does), and the
    mean completion length, over greedy completions of `rows` (prompts in TRL's layout, with their columns)."""
    prompts = [row["prompt"] for row in rows]
    completion_ids, completions = complete(model, tokenizer, prompts, max_new_tokens)
    columns = {key: [row.get(key) for row in rows] for key in rows[0] if key != "prompt"} if rows else {}
    metrics: dict[str, float] = {}
    total = [0.0] * len(rows)
    for function, weight in zip(rewards.functions, rewards.weights, strict=True):
        values = function(
            prompts=prompts,
            completions=completions,
            completion_ids=completion_ids,
            trainer_state=None,
            log_extra=lambda *args, **kwargs: None,
            log_metric=lambda *args, **kwargs: None,
            **columns,
        )
        metrics[function.__name__] = mean(values)
        total = [t + weight * (0.0 if v is None or math.isnan(v) else v) for t, v in zip(total, values, strict=True)]
    metrics["reward"] = sum(total) / len(total) if total else float("nan")
    metrics["completion_length"] = sum(map(len, completion_ids)) / len(completion_ids) if completion_ids else 0.0
    return metrics
