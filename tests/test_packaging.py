"""Packaging: `pip install llmkit` keeps a user's own supported torch; only `make install` picks the CPU wheel.

The install test is offline and builds nothing heavy: a throwaway venv sees this environment's packages (a .pth
file), holds a hand-made `torch` dist-info at another supported version, and asks pip for a --dry-run --report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "constraints-cpu.txt"
MAKEFILE = ROOT / "Makefile"
OPTIONAL = {"gguf": "gguf", "qlora": "bitsandbytes", "metrics": "evaluate", "eval": "lm-eval"}  # extra -> its package
# The user's own torch in the install test: the oldest one the stack accepts (transformers 5.23 wants >=2.6).
USER_TORCH = Version("2.6.0")


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def _torch_requirement() -> Requirement:
    reqs = [Requirement(r) for r in _project()["dependencies"]]
    torch = [r for r in reqs if canonicalize_name(r.name) == "torch"]
    assert len(torch) == 1, f"pyproject.toml should list torch once in dependencies, found {len(torch)}"
    return torch[0]


def _cpu_pin() -> Version:
    lines = [ln.split("#")[0].strip() for ln in CONSTRAINTS.read_text().splitlines()]
    reqs = [Requirement(ln) for ln in lines if ln]
    torch = [r for r in reqs if canonicalize_name(r.name) == "torch"]
    assert len(torch) == 1, "constraints-cpu.txt should constrain torch exactly once"
    (spec,) = torch[0].specifier
    assert spec.operator == "==", f"constraints-cpu.txt should pin torch exactly, not {spec}"
    return Version(spec.version)


def test_torch_is_a_range_and_make_install_pins_the_cpu_wheel():
    req, pin = _torch_requirement(), _cpu_pin()
    assert req.specifier.contains(pin), f"the CPU pin {pin} (what CI tests) is outside pyproject's '{req}'"
    assert req.specifier.contains(USER_TORCH), f"'{req}' should admit {USER_TORCH} (or move USER_TORCH with it)"
    assert any(s.operator in (">", ">=") for s in req.specifier), f"'{req}' needs a lower bound"
    assert any(s.operator in ("<", "<=") for s in req.specifier), f"'{req}' needs an upper bound"

    makefile = MAKEFILE.read_text()
    stamp = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.M)
    assert stamp and "constraints-cpu.txt" in stamp.group(1).split(), "the install stamp must depend on it"
    install = [ln for ln in makefile.splitlines() if "pip install" in ln and "-e '.[dev]'" in ln]
    assert len(install) == 1, "expected one `pip install ... -e '.[dev]'` line in the Makefile"
    assert "-c constraints-cpu.txt" in install[0], "make install must use constraints-cpu.txt"


def test_optional_packages_are_extras_not_core():
    project = _project()
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    for extra, package in OPTIONAL.items():
        assert package not in core, f"{package} is for one feature only: the '{extra}' extra, not core"
        assert [canonicalize_name(Requirement(r).name) for r in extras[extra]] == [package]
    assert "jinja2" in core  # llmkit/data/sft.py imports it
    assert Requirement(extras["all"][0]).extras == set(OPTIONAL) and len(extras["all"]) == 1
    assert "llmkit[all]" in extras["dev"]


# ------------------------------------------------------------------ pip install keeps a user's supported torch


def _write_dist_info(site: Path, name: str, version: str) -> None:
    """A distribution as pip sees an installed one: a .dist-info with METADATA, INSTALLER and RECORD."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text(f"{info.name}/METADATA,,\n{info.name}/INSTALLER,,\n{info.name}/RECORD,,\n")


def _write_wheel(folder: Path, name: str, version: str) -> None:
    """An empty wheel: what an index offering torch `version` looks like to the resolver."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: llmkit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


class UserEnv:
    """A user's venv: this environment's packages, but its own torch at another supported version."""

    def __init__(self, root: Path, torch_version: Version, offered: Version) -> None:
        venv = pytest.importorskip("venv", reason="needs the venv module to make a throwaway environment")
        venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(root / "venv")
        self.python = root / "venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
        # No pip config (this machine's caps torch), no user site: only what the test lays out counts.
        self.env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
        site = Path(self._python("import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
        # Its own site-packages first, then ours (pip, setuptools, transformers, ... count as installed there).
        ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        (site / "zz-llmkit-test-main-env.pth").write_text("".join(f"{p}\n" for p in ours))
        _write_dist_info(site, "torch", str(torch_version))
        self.index = root / "index"
        self.index.mkdir()
        _write_wheel(self.index, "torch", str(offered))
        self.report = root / "report.json"

    def _python(self, code: str) -> str:
        done = subprocess.run([self.python, "-c", code], env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def torch_version(self) -> str:
        return self._python("import importlib.metadata as m; print(m.version('torch'))").strip()

    def dry_run_install(self, target: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
        """pip install --dry-run of `target`, offline: returns pip's result and {name: version} it would install."""
        self.report.unlink(missing_ok=True)
        cmd = [self.python, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links", str(self.index)]
        cmd += ["--no-build-isolation", "--quiet", "--report", str(self.report), target]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return done, {}
        report = json.loads(self.report.read_text())
        return done, {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}


@pytest.fixture(scope="module")
def user_env(tmp_path_factory) -> UserEnv:
    pytest.importorskip("setuptools", reason="--no-build-isolation needs the build backend installed here")
    env = UserEnv(tmp_path_factory.mktemp("user-env"), USER_TORCH, _cpu_pin())
    assert env.torch_version() == str(USER_TORCH), "the venv's own torch should come before ours"
    return env


@pytest.mark.parametrize("extras", ["", "[all]"])
def test_pip_install_keeps_a_supported_torch(user_env, extras):
    """The user has torch 2.6.0 and the index offers the CPU pin's version: pip keeps the user's."""
    done, install = user_env.dry_run_install(f"{ROOT}{extras}")
    assert done.returncode == 0, f"pip could not resolve llmkit{extras} with the user's torch:\n{done.stderr}"
    assert "llmkit" in install, install
    assert "torch" not in install, f"pip install llmkit{extras} would replace the user's torch: {install}"


def test_a_torch_pin_would_fail_this_check(user_env, tmp_path):
    """Negative control: the same check on pyproject.toml with torch pinned to the CPU wheel replaces torch."""
    pin = _cpu_pin()
    project = tmp_path / "pinned"
    shutil.copytree(ROOT / "llmkit", project / "llmkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "README.md", project / "README.md")
    text, count = re.subn(r'"torch\s*[<>=!~][^"]*"', f'"torch=={pin}"', PYPROJECT.read_text(), count=1)
    assert count == 1
    (project / "pyproject.toml").write_text(text)

    done, install = user_env.dry_run_install(str(project))
    assert done.returncode == 0, done.stderr
    assert install.get("torch") == str(pin), f"a torch=={pin} pin should replace the user's torch: {install}"
