"""`task: reward`: a reward model on preference pairs, with TRL's RewardTrainer.

The model is a sequence classifier with one output (decoders pool the last token, encoders [CLS]); the loss is
−log σ(r(chosen) − r(rejected)). What llmkit adds: the pairs, tokenised once for every family
(`llmkit.data.reward`), and the held-out pairwise accuracy, mean margin and loss over every pair before and after
training, from one scoring pass each (TRL's own evaluation averages per batch and runs only with
training.eval_strategy).
"""

from __future__ import annotations

from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from llmkit.console import say
from llmkit.data.cache import key_for
from llmkit.data.preference import check_identical, to_trl, wants_chat
from llmkit.data.prepared import Prepared, prepare_splits
from llmkit.data.reward import build_reward_pairs, reward_ids
from llmkit.data.sources import Rows
from llmkit.fit import fit
from llmkit.heldout import weigh_eval_loss
from llmkit.models import Trained
from llmkit.recipe import Recipe
from llmkit.rewards.model import pairwise, score_ids
from llmkit.run import RunEnv, TaskResult, build_model, total_steps, training_args
from llmkit.tasks.preference import loss_units, trl_defaults

ENCODERS = ("bert",)  # families that read a (prompt, answer) text pair; the others read prompt + answer


def prepare(env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """Rows → pairs of token ids (`chosen_ids` / `rejected_ids`), checked and length-limited."""
    data = env.recipe.data
    encoder = env.base.family in ENCODERS
    return prepare_splits(
        data,
        lambda rows: build_reward_pairs(rows, data, tokenizer, encoder, check=False),
        f"(all identical or longer than data.max_length={data.max_length})",
        unit="preference pairs",
        key=key_for(env.recipe, tokenizer, head=env.head, encoder=encoder),
        finish=lambda stats: check_identical(stats, data.identical_pairs),
    )


def run(env: RunEnv) -> TaskResult:
    from trl import RewardConfig, RewardTrainer

    data, section = env.recipe.data, env.recipe.reward
    datasets.disable_progress_bars()
    tokenizer = env.tokenizer()
    prepared = prepare(env, tokenizer)
    held_out = prepared.held_out.to_list() if prepared.held_out else None  # scored pair by pair, before and after
    trl_eval = bool(held_out) and env.recipe.training.eval_strategy not in (None, "no")  # TRL's own, when asked
    options = {**trl_defaults(env), **(section.kwargs() if section else {}), "max_length": data.max_length}
    args = training_args(env, RewardConfig, evaluate=trl_eval, **options)
    built = build_model(env, tokenizer, total_steps=total_steps(len(prepared.train), args), num_labels=1)
    dtypes = {name: p.dtype for name, p in built.model.named_parameters() if p.requires_grad}
    trainer = RewardTrainer(
        model=built.model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.held_out if trl_eval else None,
        processing_class=tokenizer,
    )
    weigh_eval_loss(trainer, loss_units("reward"))  # TRL's batch: the chosen answers, then the rejected ones
    # TRL casts a 4-bit model's trainable weights to bfloat16; the head must stay in the dtype its inputs arrive in.
    for name, p in built.model.named_parameters():
        if name in dtypes and p.dtype != dtypes[name]:
            p.data = p.data.to(dtypes[name])
    metrics: dict[str, Any] = {}
    if held_out:
        before = pairwise(built.model, held_out, tokenizer.pad_token_id, args.per_device_eval_batch_size)
        metrics.update({f"eval_{k}_before": v for k, v in before.items()})
    metrics.update(fit(trainer, env, built))
    if held_out:
        after = pairwise(built.model, held_out, tokenizer.pad_token_id, args.per_device_eval_batch_size)
        metrics.update({f"eval_{k}": v for k, v in after.items()})
        say(
            f"held-out pairwise accuracy {before['pairwise_accuracy']:.3f} → {after['pairwise_accuracy']:.3f}, "
            f"mean margin {before['mean_margin']:.3f} → {after['mean_margin']:.3f}, loss "
            f"{before['pairwise_loss']:.4f} → {after['pairwise_loss']:.4f} ({len(held_out)} pairs)"
        )
    return TaskResult(metrics, built, tokenizer, data=prepared.sources)


# ---------------------------------------------------------------- llmkit eval / llmkit predict


def evaluate(env: RunEnv, trained: Trained, rows: Rows, prefix: str) -> dict[str, float]:
    """Pairwise accuracy and mean margin over every pair of `rows` (`llmkit eval`)."""
    encoder = trained.info["family"] in ENCODERS
    pairs, _, stats = build_reward_pairs(rows, env.recipe.data, trained.tokenizer, encoder)
    say(f"{prefix}: {stats.summary(rows.name)}")
    return {f"{prefix}_{k}": v for k, v in pairwise(trained.model, pairs, trained.tokenizer.pad_token_id).items()}


def predict(recipe: Recipe, trained: Trained, rows: list[dict[str, Any]], origins: list[str]) -> list[dict[str, Any]]:
    """Each row's `response` scored (`score`), or its `chosen` and `rejected` answers compared (`llmkit predict`).
    Inputs are rendered as in training and cut to data.max_length."""
    data, tokenizer = recipe.data, trained.tokenizer
    encoder = trained.info["family"] in ENCODERS
    use_chat = wants_chat(data.format, data.template, tokenizer)
    answers = [("response",) if row.get("response") is not None else ("chosen", "rejected") for row in rows]
    sequences = []
    for row, keys in zip(rows, answers, strict=True):
        pair = to_trl(
            {**row, "chosen": row[keys[0]], "rejected": row[keys[-1]]}, data.format, use_chat, data.system_prompt
        )
        sequences += [
            reward_ids(pair["prompt"], pair[k], tokenizer, encoder)[: data.max_length]
            for k in ("chosen", "rejected")[: len(keys)]
        ]
    scores = iter(score_ids(trained.model, sequences, tokenizer.pad_token_id))
    out = []
    for keys in answers:
        if keys == ("response",):
            out.append({"score": round(next(scores), 6)})
            continue
        chosen, rejected = next(scores), next(scores)
        out.append(
            {
                "chosen_score": round(chosen, 6),
                "rejected_score": round(rejected, 6),
                "prefers": "chosen" if chosen > rejected else "rejected",
            }
        )
    return out
