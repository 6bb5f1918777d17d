"""The run directory: where a run works, and how it becomes a finished output in one atomic step.

A run works in `<output_dir>.incomplete/` (checkpoints, logs, the model as it is saved) and is renamed to
`<output_dir>` only when everything is written, so an interrupted run never leaves something that looks finished,
and `resume_from_checkpoint: true` (or `auto`) knows where to look.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from llmkit import checkpoints
from llmkit.errors import RecipeError

PACKAGES = ("llmkit", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "evaluate")


@dataclass(frozen=True)
class RunDir:
    final: Path
    work: Path
    created_parents: list[Path] = field(default_factory=list)  # made by start(); discard() removes them again

    @property
    def checkpoints(self) -> Path:
        return self.work / "checkpoints"

    @classmethod
    def for_output(cls, output_dir: str | os.PathLike[str]) -> RunDir:
        final = Path(output_dir).expanduser()
        return cls(final, final.with_name(final.name + ".incomplete"))

    def check(self, resume: bool | str | None) -> Path | None:
        """Refuse to overwrite a finished run or silently restart an interrupted one; return the checkpoint to resume
        from. `resume: auto` resumes the last complete checkpoint if there is one and otherwise starts over, so one
        command serves a requeue loop. Writes nothing (`start` clears what `auto` starts over from)."""
        if self.final.exists() and (not self.final.is_dir() or any(self.final.iterdir())):
            raise RecipeError(
                f"output_dir: '{self.final}' already exists and is not empty; choose a new output_dir "
                "(or delete the old run)."
            )
        if resume == "auto":
            return self.last_checkpoint()
        if resume and resume is not True:
            if not Path(str(resume)).is_dir():
                raise RecipeError(f"training.resume_from_checkpoint: checkpoint '{resume}' does not exist.")
            if not (Path(str(resume)) / "trainer_state.json").is_file():
                raise RecipeError(
                    f"training.resume_from_checkpoint: '{resume}' has no trainer_state.json, so it is not a "
                    "complete trainer checkpoint; use true or auto for the run's last complete one."
                )
            return Path(str(resume))
        if resume:
            last = self.last_checkpoint()
            if last is None:
                raise RecipeError(
                    f"training.resume_from_checkpoint: no complete checkpoint to resume in '{self.checkpoints}'; "
                    "checkpoints are written every training.save_steps steps (auto starts over when there is none)."
                )
            return last
        if self.work.exists() and any(self.work.iterdir()):
            raise RecipeError(
                f"output_dir: an interrupted run is in '{self.work}'; set training.resume_from_checkpoint=true "
                "(or auto) to continue it, or delete that directory to start over."
            )
        return None

    def last_checkpoint(self) -> Path | None:
        return checkpoints.last_complete(self.checkpoints)

    def start(self, resolved_recipe: str, resume: Path | None) -> None:
        """Create the work directory. Resuming: drop checkpoints a killed save left incomplete. Starting over in a
        directory an interrupted run left (auto, no complete checkpoint): clear it first."""
        if resume is None and self.work.exists():
            shutil.rmtree(self.work)
        self.created_parents[:] = [p for p in reversed(self.work.parents) if not p.exists()]
        self.work.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_incomplete(self.checkpoints)
        write_text(self.work / "recipe.yaml", resolved_recipe)

    def discard(self) -> None:
        """Remove a failed run's work directory, and the parent directories its start created (if still empty)."""
        shutil.rmtree(self.work, ignore_errors=True)
        for parent in reversed(self.created_parents):
            with contextlib.suppress(OSError):
                parent.rmdir()

    def finish(self, metrics: dict[str, Any], manifest: dict[str, Any]) -> None:
        checkpoints.strip_resume_state(self.checkpoints)
        write_json(self.work / "metrics.json", metrics)
        write_json(self.work / "manifest.json", manifest)
        if self.final.is_dir():  # empty (checked at start); os.replace needs it gone
            self.final.rmdir()
        os.replace(self.work, self.final)


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def manifest(recipe_source: str | None, data_fingerprints: dict[str, Any], started: float) -> dict[str, Any]:
    """What is needed to reproduce or audit the run: versions, data fingerprints, code commit, command line."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "recipe": recipe_source,
        "command": sys.argv,
        "cwd": str(Path.cwd()),  # where the recipe's relative paths start; `llmkit eval RUN` reads them from here
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "data": data_fingerprints,
        # The project the run was started in (its recipes and data), and llmkit's own source when it is a checkout.
        "git": {"cwd": _git_state(Path.cwd()), "llmkit": _git_state(Path(__file__).resolve().parent)},
    }


def trained_in(run_dir: str | os.PathLike[str]) -> Path | None:
    """The directory a finished run was trained in (its manifest's cwd), or None for a run that did not record it."""
    try:
        cwd = json.loads((Path(run_dir) / "manifest.json").read_text()).get("cwd")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(cwd) if isinstance(cwd, str) else None


def _git_state(directory: Path) -> dict[str, Any] | None:
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=5)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return None
        top = git("rev-parse", "--show-toplevel").stdout.strip()
        return {
            "repo": top,
            "commit": commit.stdout.strip(),
            "dirty": bool(git("status", "--porcelain").stdout.strip()),
        }
    except (OSError, subprocess.SubprocessError):
        return None
