"""llmkit from a notebook: your own data objects, your own callbacks, a trained model you can use at once.

Run it cell by cell in Jupyter (each `# %%` is a cell) or whole: `python docs/examples/notebook.py` from the repo
root trains SmolLM2-135M-Instruct (LoRA) on a list of dicts and MiniLM on a pandas DataFrame of SMS messages — a few
minutes on a CPU. The test suite runs this file on tiny models (tests/test_python_api.py sets the LLMKIT_EXAMPLE_*
variables), so it cannot rot. docs/python-api.md explains every call.
"""

# %%
import json
import os
from pathlib import Path

import pandas as pd
from transformers import TrainerCallback

import llmkit
from llmkit import Recipe, Trainer

DATA = Path(__file__).resolve().parents[2] / "data"
OUT = Path(os.environ.get("LLMKIT_EXAMPLE_OUTPUT", "outputs/notebook"))
CHAT_MODEL = os.environ.get("LLMKIT_EXAMPLE_CHAT_MODEL", "packaged:smollm2-135m-instruct")
CLASSIFIER = os.environ.get("LLMKIT_EXAMPLE_CLASSIFIER", "packaged:all-minilm-l6-v2")
STEPS = int(os.environ.get("LLMKIT_EXAMPLE_STEPS", "40"))

# %% [markdown]
# ## 1. Instruction tuning from a list of dicts
# The rows are Python objects; the recipe has no data.train. The same format checks, held-out carve-out and cache
# apply as for a file, and a bad row is named by its index: "row 3 of train (in-memory list)".

# %%
rows = [r for r in json.loads((DATA / "instruction-data.json").read_text()) if len(r["output"]) < 200][:400]

recipe = Recipe(
    model={"name": CHAT_MODEL},
    data={"format": "alpaca", "max_length": 256, "validation_split": 0.1},
    method={"name": "lora", "r": 8, "lora_alpha": 16},
    training={"max_steps": STEPS, "per_device_train_batch_size": 8, "learning_rate": 2e-4, "logging_steps": 10},
    generation={"max_new_tokens": 32},
    output_dir=str(OUT / "sft"),
)


class LossLog(TrainerCallback):
    """Any transformers TrainerCallback works: this one keeps every logged training loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


log = LossLog()
sft = Trainer(recipe, train=rows, callbacks=[log]).train()
print("held-out loss:", round(sft.metrics["eval_loss_before"], 4), "→", round(sft.metrics["eval_loss"], 4))
print("logged losses:", [round(x, 3) for x in log.losses])

# %%
# The trained model answers at once, rendered with the run's own template: exactly what `llmkit generate` prints.
print(sft.generate("Name three primary colours."))
print(sft.generate(["What is the capital of France?", "Rewrite politely: give me the salt."], max_new_tokens=16))

# %% [markdown]
# ## 2. A classifier from a pandas DataFrame, with a metric of your own

# %%
train = pd.read_csv(DATA / "sms-spam" / "train.tsv", sep="\t", keep_default_na=False).head(600)
validation = pd.read_csv(DATA / "sms-spam" / "validation.tsv", sep="\t", keep_default_na=False).head(200)


def balanced_accuracy(predictions, references):
    """Called like an `evaluate` metric: predicted and true label ids (for seq2seq: generated and reference texts)."""
    from sklearn.metrics import balanced_accuracy_score

    return {"balanced_accuracy": balanced_accuracy_score(references, predictions)}


spam = Recipe(
    task="classification",
    model={"name": CLASSIFIER},
    data={"format": "classification", "columns": {"text": "SMS", "label": "Label"}, "max_length": 128},
    method="full",
    training={"max_steps": STEPS, "per_device_train_batch_size": 16, "learning_rate": 5e-5, "logging_steps": 10},
    output_dir=str(OUT / "spam"),
)
classifier = Trainer(spam, train=train, validation=validation, compute_metrics=balanced_accuracy).train()
print({k: round(v, 4) for k, v in classifier.metrics.items() if k.startswith("eval_") and "balanced" in k})

# %%
# New rows: a list of dicts (or a DataFrame / Dataset) in the run's own columns; each comes back with its prediction.
new = [{"SMS": "WINNER!! Claim your £900 prize now, call 09061701461"}, {"SMS": "Lunch at 12 tomorrow?"}]
for row in classifier.predict(new):
    print(row["prediction"], row["probabilities"], row["SMS"])

# %% [markdown]
# ## 3. Later, in another session: the finished run, loaded

# %%
again = llmkit.load(OUT / "spam")  # the model loads on first use
assert again.predict(new) == classifier.predict(new)
quicker = spam.replace(**{"training.max_steps": max(1, STEPS // 2)}, output_dir=str(OUT / "spam-short"))
print(quicker.training.max_steps, quicker.output_dir)
