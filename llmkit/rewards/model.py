"""A reward model's scores: token ids in, one float each out — for `task: reward`'s held-out accuracy, `llmkit
predict`, and a finished reward run used as a GRPO reward.

As a GRPO reward, llmkit scores the completions itself rather than handing TRL the model: TRL renders a text prompt +
completion without the BOS and EOS the reward model was trained with (`llmkit.data.reward.reward_ids` is the one
rendering for training and scoring).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from llmkit.console import say
from llmkit.data.reward import reward_ids
from llmkit.errors import RecipeError
from llmkit.models import load_trained
from llmkit.recipe import Recipe
from llmkit.rewards.builtin import completion_text


@torch.no_grad()
def score_ids(model: Any, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int = 16) -> list[float]:
    """The model's one output for each sequence (right-padded: decoders pool the last token that is not the pad)."""
    was_training = model.training
    model.eval()
    scores: list[float] = []
    for start in range(0, len(sequences), batch_size):
        batch = [list(ids) for ids in sequences[start : start + batch_size]]
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for i, ids in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
        device = model.device
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        scores += logits[:, 0].float().cpu().tolist()
    model.train(was_training)
    return scores


def pairwise(model: Any, pairs: Sequence[dict[str, Any]], pad_id: int, batch_size: int = 16) -> dict[str, float]:
    """Over every pair (each counts once, whatever the batches): the share whose chosen answer scores higher (ties
    count as wrong, as in TRL), the mean margin score(chosen) − score(rejected), and the mean of the loss RewardTrainer
    minimises, −log σ(margin)."""
    chosen = score_ids(model, [p["chosen_ids"] for p in pairs], pad_id, batch_size)
    rejected = score_ids(model, [p["rejected_ids"] for p in pairs], pad_id, batch_size)
    margins = torch.tensor(chosen, dtype=torch.float64) - torch.tensor(rejected, dtype=torch.float64)
    return {
        "pairwise_accuracy": float((margins > 0).double().mean()),
        "mean_margin": float(margins.mean()),
        "pairwise_loss": float(-torch.nn.functional.logsigmoid(margins).mean()),
    }


class RewardModel:
    """A finished `task: reward` run as a GRPO reward (TRL's signature): each prompt + completion is rendered as the
    reward model was trained to read it, and its score is the reward."""

    def __init__(self, run_dir: str, policy_tokenizer: Any, key: str):
        self.run_dir = Path(run_dir).expanduser()
        self.key = key
        tokenizer = AutoTokenizer.from_pretrained(self.run_dir)
        if tokenizer.get_vocab() != policy_tokenizer.get_vocab():
            raise RecipeError(
                f"{key}: reward_model '{run_dir}' was trained with another tokenizer than the model's; it would score "
                "completions rendered in a chat template it never read. Train the reward model from the same base "
                "model (or one that shares its tokenizer)"
            )
        self.tokenizer = tokenizer
        self.model: Any = None
        self.__name__ = "reward_model"

    def load(self) -> None:
        """The weights (after every reward's checks passed), and how the run rendered its inputs."""
        trained = load_trained(self.run_dir)
        if torch.cuda.is_available():
            trained.model.to("cuda")
        self.model = trained.model.eval().requires_grad_(False)
        self.encoder = trained.info["family"] == "bert"
        self.max_length = Recipe.from_run(self.run_dir).data.max_length
        say(f"{self.key}: reward model {self.run_dir} ({trained.info['family']})")

    def record(self) -> dict[str, Any]:
        """For the manifest: the run and a hash of its weights."""
        digest = hashlib.sha256()
        for path in sorted(self.run_dir.glob("*.safetensors")):
            digest.update(path.read_bytes())
        return {"reward_model": str(self.run_dir), "sha256": digest.hexdigest()}

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        answers = [c if isinstance(p, list) else completion_text(c) for p, c in zip(prompts, completions, strict=True)]
        ids = [
            reward_ids(p, a, self.tokenizer, self.encoder)[: self.max_length]
            for p, a in zip(prompts, answers, strict=True)
        ]
        return score_ids(self.model, ids, self.tokenizer.pad_token_id)
