"""bench/gpu.py (make bench-gpu): its FLOPs and peak tables, and a CPU dry run of every runner × method, so the
benchmark is known to run before a GPU is lent to it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "gpu.py")
gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu)


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA GeForce RTX 3090", None),
    ],
)
def test_peak_bf16_by_gpu_name_and_none_for_an_unknown_gpu(name, peak):
    assert gpu.peak_tflops(name) == peak


def test_flops_per_token_is_6n_for_full_and_4n_for_adapters():
    assert gpu.flops_per_token(1000, "full") == 6000
    assert gpu.flops_per_token(1000, "lora") == gpu.flops_per_token(1000, "qlora") == 4000


@pytest.mark.e2e
def test_dry_run_trains_every_runner_and_method_on_cpu(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--dry-run", "--work", str(tmp_path / "work"),
         "--output", str(out), "--markdown", str(tmp_path / "results.md")],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["setup"]["dry_run"] and report["setup"]["torch"]
    bnb = importlib.util.find_spec("bitsandbytes") is not None
    for method in ("lora", "qlora", "full"):
        for runner in ("bare", "llmkit", "trl"):
            result = report["results"][method][runner]
            if method == "qlora" and not bnb:
                assert "bitsandbytes" in result["skipped"]
            else:
                assert result["tokens_per_second"] > 0, (method, runner, result)
    table = (tmp_path / "results.md").read_text()
    assert "| lora | llmkit |" in table and "| full | trl |" in table
