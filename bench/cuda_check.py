"""Check that a sweep and the diagnostics run on CUDA and agree with the CPU.

Builds the tests' tiny random Llama and suite in a temporary folder, runs the same
sweep with ``--device cpu`` and ``--device cuda``, and prints how far the per-item
numbers differ; then runs ``qharness diagnose`` on CUDA. Needs a CUDA device.

    python bench/cuda_check.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.cli import main  # noqa: E402
from tests.conftest import make_model, make_tokenizer, write_jsonl  # noqa: E402

SUITE = """name: cuda-check
tasks:
  - {name: text, kind: perplexity, data: text.jsonl, slices: [general], window: 64}
  - {name: mc, kind: multiple_choice, data: mc.jsonl, slices: [arithmetic], prompt: "{context}"}
  - {name: gen, kind: generate, data: gen.jsonl, slices: [arithmetic], prompt: "{a} + {b} =", fewshot: 2,
     fewshot_delimiter: "\\n", max_new_tokens: 3}
"""


def build(root: Path) -> tuple[Path, Path]:
    tokenizer = make_tokenizer()
    model_dir = root / "tiny"
    make_model(len(tokenizer), layers=4).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_jsonl(
        root / "text.jsonl",
        [{"id": f"t{i}", "text": f"Sample text number {i} about bits. " * 6} for i in range(8)],
    )
    write_jsonl(root / "mc.jsonl", [{"id": f"m{i}", "context": f"{i} plus one is", "choices": [str(i + 1), str(i + 2), "x"],
                                     "answer": 0} for i in range(12)])  # fmt: skip
    write_jsonl(
        root / "gen.jsonl",
        [{"id": f"g{i}", "a": i % 10, "b": 1, "answer": str(i % 10 + 1)} for i in range(12)],
    )
    (root / "suite.yaml").write_text(SUITE)
    return model_dir, root / "suite.yaml"


def sweep(model_dir: Path, suite: Path, out: Path, device: str) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    code = main(["run", "--model", str(model_dir), "--suite", str(suite), "--out", str(out), "--device", device,
                 "--bits", "8,4,2", "--group-size", "32", "--no-progress"])  # fmt: skip
    assert code in (0, 1), f"run on {device} exited {code}"
    items = (
        pd.read_parquet(out / "items.parquet")
        .sort_values(["variant", "task", "item_id"])
        .reset_index(drop=True)
    )
    return items, time.perf_counter() - start


def run() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, suite = build(root)
        cpu, cpu_s = sweep(model_dir, suite, root / "cpu", "cpu")
        gpu, gpu_s = sweep(model_dir, suite, root / "cuda", "cuda")
        same_correct = (cpu["correct"].fillna(False) == gpu["correct"].fillna(False)).mean()
        same_prediction = (cpu["prediction"] == gpu["prediction"]).mean()
        nll_rel = ((cpu["nll"] - gpu["nll"]).abs() / cpu["nll"].abs().clip(lower=1e-9)).max()
        kld_abs = (cpu["kld"] - gpu["kld"]).abs().max()
        print(f"rows {len(cpu)} cpu / {len(gpu)} cuda; same correctness {same_correct:.1%}; "
              f"same predictions {same_prediction:.1%}; max relative NLL difference {nll_rel:.2e}; "
              f"max KLD difference {kld_abs:.2e}; wall {cpu_s:.1f}s cpu, {gpu_s:.1f}s cuda")  # fmt: skip
        code = main(["diagnose", "--model", str(model_dir), "--suite", str(suite), "--device", "cuda",
                     "--bits", "4,2", "--group-size", "32", "--keep", "1", "--out", str(root / "diag")])  # fmt: skip
        print(
            f"diagnose on cuda exited {code}; files: {sorted(p.name for p in (root / 'diag').iterdir())}"
        )
        ok = len(cpu) == len(gpu) and same_correct == 1.0 and nll_rel < 1e-3 and code == 0
    print("CUDA CHECK", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
