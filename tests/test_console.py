"""What a user reads: the summary has the same columns for every task, plain progress lines when stderr is not a
terminal, and transformers' load report only when it names a weight llmkit did not mean to leave out."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from llmkit.console import _ExpectedLoadReport
from llmkit.progress import Progress, summary

SFT = {"eval_loss_before": 1.0548, "eval_loss": 0.7883, "train_loss": 0.93, "train_steps": 24, "train_runtime_s": 102.0,
       "train_tokens": 1702, "tokens_per_second": 16.7, "trainable_params": 10, "total_params": 100}  # fmt: skip
CLASSIFICATION = {**SFT, "eval_accuracy_before": 0.48, "eval_accuracy": 0.99, "test_accuracy": 0.9866,
                  "test_loss": 0.05}  # fmt: skip
PREFERENCE = {**SFT, "preference_accuracy_before": 0.5, "preference_accuracy": 0.6}


def test_the_summary_has_the_same_columns_for_every_task():
    for metrics in (SFT, CLASSIFICATION, PREFERENCE):
        lines = summary(metrics).splitlines()
        assert lines[0].split() == ["metric", "before", "after", "test"]
        assert lines[-1].startswith("training: 24 steps in 1 min 42 s · train_loss 0.9300 · 1,702 tokens (17/s)")
    rows = {line.split()[0]: line.split()[1:] for line in summary(CLASSIFICATION).splitlines()[1:-1]}
    assert rows == {"loss": ["1.0548", "0.7883", "0.0500"], "accuracy": ["0.4800", "0.9900", "0.9866"]}
    assert "preference_accuracy" in summary(PREFERENCE)


def test_progress_off_a_terminal_is_one_plain_line_per_log(capfd):
    progress = Progress(tty=False)
    state = SimpleNamespace(global_step=8, max_steps=24)
    progress.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=24), None)
    progress.on_log(None, state, None, logs={"loss": 1.23456, "grad_norm": 0.5, "learning_rate": 2e-4, "epoch": 0.1})
    progress.on_log(None, state, None, logs={"eval_loss": 0.9, "eval_runtime": 3.0})
    err = capfd.readouterr().err
    assert err.splitlines() == [
        "llmkit: step 8/24: loss 1.235, grad_norm 0.5, learning_rate 0.0002",
        "llmkit: step 8/24: held-out loss 0.9000",
    ]


def _report(*rows: str) -> logging.LogRecord:
    table = "Key | Status | \n---+---+-\n" + "\n".join(f"{row} | " for row in rows)
    message = f"\x1b[1mBertForSequenceClassification LOAD REPORT\x1b[0m from: x\n{table}\n\nNotes:\n- MISSING: ..."
    return logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0, message, None, None)


def test_the_load_report_is_kept_only_when_it_names_an_unexpected_weight():
    expected = _ExpectedLoadReport()
    assert not expected.filter(_report("classifier.weight | MISSING", "lm_head.weight | UNEXPECTED"))
    assert not expected.filter(_report("score.weight | MISSING"))
    assert expected.filter(_report("classifier.weight | MISSING", "bert.pooler.dense.weight | MISSING"))
    other = logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0, "something else", None, None)
    assert expected.filter(other)
