"""loss.png: the training loss at every logging step and the held-out loss at every evaluation, from the trainer's
log history, drawn with matplotlib's object API (no pyplot, so a notebook's backend is left alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Points = list[tuple[int, float]]


def loss_points(history: list[dict[str, Any]]) -> tuple[Points, Points]:
    """(step, training loss) per logging step and (step, held-out loss) per evaluation, in step order."""
    train = [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e and "step" in e]
    held_out = [(int(e["step"]), float(e["eval_loss"])) for e in history if "eval_loss" in e and "step" in e]
    return sorted(train), sorted(held_out)


def loss_curve(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Draw the two curves into `path` (a PNG); a run that logged neither still gets the plot, saying so."""
    from matplotlib.figure import Figure

    train, held_out = loss_points(history)
    figure = Figure(figsize=(7, 4.2), layout="constrained")
    axes = figure.add_subplot()
    curves = ((train, "training (per logging step)", ".-"), (held_out, "held-out (per evaluation)", "o-"))
    for points, label, style in curves:
        if points:
            steps, losses = zip(*points, strict=True)
            axes.plot(steps, losses, style, label=label, markersize=4)
    if train or held_out:
        axes.legend()
    else:
        note = "no loss was logged (training.logging_steps is more than the steps run?)"
        axes.text(0.5, 0.5, note, ha="center", transform=axes.transAxes)
    axes.set(xlabel="optimizer step", ylabel="loss", title=title)
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
    return path
