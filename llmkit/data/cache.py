"""The prepared-data cache: a run's tokenised splits kept as Arrow files, keyed by everything that changes them.

An entry is a directory `<cache_dir>/<key>/` holding each split's Arrow files and `meta.json` (counts, sources,
label names). It is built in `<key>.tmp-<pid>/` and renamed into place when complete, so a reader never sees half
an entry; an entry that fails to load is rebuilt with a note. The key hashes the data files' contents (or a hub
dataset's fingerprint), the recipe's data section and the task's own sections, the tokenizers' saved files (the
chat template among them), what the task adds (stop tokens, the model head), llmkit's data code and the versions
of the libraries that tokenise. docs/data.md says where the cache is and how to clear it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from llmkit.console import say
from llmkit.errors import RecipeError
from llmkit.recipe import DataSection, Recipe

META = "meta.json"
# Recipe sections besides data whose settings change examples (label order, rationale prefixes).
EXAMPLE_SECTIONS = ("classification", "distill")
# The code that turns rows into examples: a change to it must miss every entry it built.
CODE = ("data", "tasks", "recipe/formats.py")


@dataclass(frozen=True)
class CacheKey:
    """What a task's preparation depends on besides the data files: recipe settings and the tokenizers (whose chat
    template is restored on a hit, as encoding may have set one)."""

    parts: dict[str, Any]
    tokenizers: tuple[Any, ...] = field(default=())


def key_for(recipe: Recipe, *tokenizers: Any, **extra: Any) -> CacheKey:
    """The cache key of a task's preparation: the data section (not where the cache is or how many processes
    work), the task and its example-changing sections, the tokenizers, and `extra` (stop tokens, the head)."""
    data = recipe.data.model_dump(mode="json", exclude={"cache_dir", "num_proc"})
    sections = {
        name: section.model_dump(mode="json")
        for name in EXAMPLE_SECTIONS
        if (section := getattr(recipe, name, None)) is not None
    }
    return CacheKey({"task": recipe.task, "data": data, "sections": sections, **extra}, tokenizers)


def digest(key: CacheKey, fingerprints: list[str]) -> str:
    versions = {name: _version(name) for name in ("llmkit", "transformers", "tokenizers", "datasets", "jinja2")}
    everything = {
        **key.parts,
        "files": fingerprints,
        "tokenizers": [tokenizer_fingerprint(tok) for tok in key.tokenizers],
        "versions": versions,
        "code": code_fingerprint(),
    }
    return hashlib.sha256(json.dumps(everything, sort_keys=True, default=str).encode()).hexdigest()[:32]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the files the tokenizer saves (vocabulary, special tokens, chat template), so any change to how it
    tokenises or renders a conversation is a different key, wherever it was loaded from."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_pretrained(scratch)
        for path in sorted(Path(scratch).rglob("*")):
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_fingerprint() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for part in CODE:
        for path in sorted((package / part).rglob("*.py")) if (package / part).is_dir() else [package / part]:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cache_root(data: DataSection) -> Path:
    if data.cache_dir:
        return Path(data.cache_dir).expanduser()
    return Path(os.environ.get("LLMKIT_CACHE", Path.home() / ".cache" / "llmkit")) / "data"


def lookup(root: Path, key: str) -> dict[str, Any] | None:
    """An entry's meta.json, or None when there is no complete entry (a damaged one is removed, with a note)."""
    entry = root / key
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / META).read_text())
        missing = [f for split in meta["splits"].values() for f in split["files"] if not (entry / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]} is missing")
        return meta
    except (OSError, ValueError, KeyError, TypeError) as exc:
        discard(entry, exc)
        return None


def discard(entry: Path, reason: BaseException) -> None:
    say(f"the cached data in {entry} is damaged ({type(reason).__name__}: {reason}); preparing it again")
    shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def building(root: Path, key: str | None) -> Iterator[Path]:
    """A directory to build an entry in, renamed to `<root>/<key>` when the block completes and removed when it
    fails. With no key (a task that does not cache), a temporary directory that lives as long as the process."""
    if key is None:
        work = Path(tempfile.mkdtemp(prefix="llmkit-data-"))
        atexit.register(shutil.rmtree, work, True)
        yield work
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(root)
        work = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-{os.getpid()}-", dir=root))
    except OSError as exc:
        raise RecipeError(
            f"data.cache_dir: cannot write prepared data to '{root}' ({exc.strerror or exc}); make it writable or "
            "set data.cache_dir to a directory you can write"
        ) from None
    try:
        yield work
        shutil.rmtree(work / "scratch", ignore_errors=True)
        try:
            os.replace(work, root / key)
        except OSError:  # another process finished the same entry first: keep theirs
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _remove_abandoned(root: Path) -> None:
    """Entries whose builder died (killed, out of memory) are left as `<key>.tmp-<pid>-*`; remove those."""
    for path in root.glob("*.tmp-*"):
        pid = path.name.split(".tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def size_of(entry: Path) -> int:
    return sum(path.stat().st_size for path in entry.rglob("*") if path.is_file())


def human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"
