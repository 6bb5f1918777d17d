"""The teacher: any model llmkit can load, or the output_dir of an llmkit run; frozen, in eval mode, no gradients.

Token-level distillation compares the teacher's and the student's distributions over the same vocabulary, so the
tokenizers must map every token to the same id; this is checked before either model loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from llmkit import models
from llmkit.errors import RecipeError, first_line
from llmkit.families import resolve_model
from llmkit.methods import RUN_META, read_run
from llmkit.recipe import ModelSection


@dataclass
class TeacherRef:
    """Where the teacher is and what it is, before its weights load."""

    name: str
    run_dir: Path | None  # an llmkit run's output_dir
    base: models.ResolvedModel | None  # any other model
    info: dict[str, Any] = field(default_factory=dict)  # an llmkit run's llmkit.json

    @property
    def head(self) -> str | None:
        return self.info.get("head") if self.run_dir is not None else None

    @property
    def family(self) -> str:
        return self.info["family"] if self.run_dir is not None else self.base.family  # type: ignore[union-attr]

    def fingerprint(self) -> str:
        """Identifies the teacher's logits for the cache: path, size and mtime of every file, and the dtype it
        loads in (bfloat16 logits differ from float32 ones)."""
        dtype = self.base.section.dtype if self.base else "run"  # a finished run loads as it was saved
        root = self.run_dir or (Path(self.base.path) if self.base and Path(self.base.path).is_dir() else None)
        if root is None:
            return f"hub:{self.name}@{self.base.section.revision if self.base else None}|{dtype}"
        stats = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*.*"))
        return json.dumps([str(root.resolve()), [s for s in stats if "checkpoint" not in s[0]], dtype])


def resolve_teacher(name: str, dtype: str) -> TeacherRef:
    """Resolve distill.teacher (validated at recipe time) to files on disk; GGUF teachers are dequantised once."""
    path = Path(name).expanduser()
    if (path / RUN_META).is_file():
        return TeacherRef(name, path, None, read_run(path)[0])
    section = ModelSection(name=name, dtype=dtype)
    try:
        return TeacherRef(name, None, models.resolve_base(section, resolve_model(name)))
    except RecipeError as exc:
        raise RecipeError([p.replace("model.name:", "distill.teacher:", 1) for p in exc.problems]) from None


def teacher_tokenizer(ref: TeacherRef) -> PreTrainedTokenizerBase:
    if ref.run_dir is not None:
        return AutoTokenizer.from_pretrained(ref.run_dir)
    return models.load_tokenizer(ref.base)


def check_same_vocabulary(student: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase, name: str) -> None:
    """Token-level soft targets need one vocabulary: every token must have the same id in both tokenizers."""
    ours, theirs = student.get_vocab(), teacher.get_vocab()
    if ours == theirs:
        return
    differ = sum(1 for token, i in ours.items() if theirs.get(token) != i) + len(set(theirs) - set(ours))
    raise RecipeError(
        f"distill.teacher: '{name}' has a different vocabulary from the student ({len(theirs):,} vs {len(ours):,} "
        f"tokens, {differ:,} differ), so their token distributions cannot be compared; use a teacher that shares "
        "the student's tokenizer (the same model family and release), or distil through rationales "
        "(data.format: rationale), which needs only text."
    )


def load_teacher(ref: TeacherRef, head: str, tokenizer: PreTrainedTokenizerBase, **head_kwargs: Any) -> Any:
    """The teacher under `head`, frozen and in eval mode: it is only ever read."""
    if ref.run_dir is not None:
        if ref.head != head:
            raise RecipeError(
                f"distill.teacher: the run '{ref.name}' trained a {ref.head} model, but this distillation needs a "
                f"{head} teacher."
            )
        model = models.load_trained(ref.run_dir).model
    else:
        try:
            model = models.load_model(ref.base, head, tokenizer, **head_kwargs)
        except (OSError, ValueError) as exc:
            raise RecipeError(f"distill.teacher: cannot load '{ref.name}': {first_line(exc)}") from None
    model.requires_grad_(False)
    return model.eval()
