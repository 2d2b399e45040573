"""Pre-quantized artifacts as variants: GGUF files written in-process with gguf-py,
loaded against their base model, paired item by item, sized from the file itself."""

from __future__ import annotations

import json
import math
import shutil

import gguf
import numpy as np
import pandas as pd
import pytest
import torch

from harness.cli import EXIT_GATE_FAILED, EXIT_USAGE, main
from harness.errors import InputError
from harness.records import Artifact
from tests.artifacts import run_cli, write_gguf
from tests.conftest import make_model


def on_q8_0_grid(model):
    """The model with every 2-D weight replaced by its Q8_0 round trip (a base that
    already lies on the artifact's grid)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                kind = gguf.GGMLQuantizationType.Q8_0
                data = p.detach().numpy()
                p.copy_(
                    torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(data, kind), kind))
                )
    return model


@pytest.fixture(scope="module")
def grid_base(tmp_path_factory, tokenizer):
    """A base model on the Q8_0 grid, saved as a folder, and its Q8_0 and Q4_0 GGUFs."""
    root = tmp_path_factory.mktemp("grid")
    model = on_q8_0_grid(make_model(len(tokenizer), seed=3))
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    write_gguf(model, tokenizer, root / "base-q8_0.gguf", "Q8_0")
    write_gguf(model, tokenizer, root / "base-q4_0.gguf", "Q4_0")
    return root


def test_a_gguf_on_the_base_grid_shows_no_divergence_and_a_coarser_one_does(
    grid_base, tiny_suite, tmp_path
):
    out = tmp_path / "run"
    q8, q4 = grid_base / "base-q8_0.gguf", grid_base / "base-q4_0.gguf"
    code, _ = run_cli(["--model", str(grid_base / "base"), "--suite", str(tiny_suite),
                   "--variant-models", f"{q8},{q4}"], out)  # fmt: skip
    assert code in (0, 1)
    items = pd.read_parquet(out / "items.parquet")
    assert set(items["variant"]) == {"baseline", "base-q8_0", "base-q4_0"}
    same = items[items["variant"] == "base-q8_0"]
    assert same["kld"].max() < 1e-4 and same["top1_agree"].min() == 1.0
    comparisons = pd.read_csv(out / "comparisons.csv")
    exact = comparisons[comparisons["variant"] == "base-q8_0"]
    assert exact["lost"].fillna(0).sum() == 0 and exact["gained"].fillna(0).sum() == 0
    assert items[items["variant"] == "base-q4_0"]["kld"].mean() > 1e-3
    manifest = json.loads((out / "manifest.json").read_text())
    q8_info = manifest["variants"]["base-q8_0"]
    reader = gguf.GGUFReader(str(q8))
    bits = (
        8
        * sum(int(t.n_bytes) for t in reader.tensors)
        / sum(int(t.n_elements) for t in reader.tensors)
    )
    assert q8_info["method"] == "gguf:Q8_0" and q8_info["effective_bits"] == pytest.approx(
        bits, rel=1e-3
    )
    assert q8_info["tensor_types"] == {"Q8_0": 16, "F32": 5}
    assert q8_info["artifact"]["sha256"] and q8_info["source"] == str(q8)
    assert "tensor types Q8_0 ×16, F32 ×5" in q8_info["note"]


def test_bad_artifacts_are_one_line_errors_with_nothing_written(
    grid_base, tiny_suite, tmp_path, tokenizer, capsys
):
    base = grid_base / "base"
    other_vocab = make_model(len(tokenizer), seed=5)
    renamed = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))

    class Renamed:  # the same tokenizer with one token spelled differently
        def __len__(self):
            return len(renamed)

        def convert_ids_to_tokens(self, ids):
            return [("X" if i == 40 else renamed[i]) for i in ids]

    write_gguf(other_vocab, Renamed(), tmp_path / "vocab.gguf", "Q8_0")
    deeper = make_model(len(tokenizer), seed=6, layers=3)
    write_gguf(deeper, tokenizer, tmp_path / "deeper.gguf", "Q8_0")
    write_gguf(other_vocab, tokenizer, tmp_path / "float.gguf", "F32")
    write_gguf(other_vocab, tokenizer, tmp_path / "q8_1.gguf", "Q8_0", types={"blk.0.attn_q.weight": "Q8_1"},
               raw={"blk.0.attn_q.weight": np.zeros((64, 2 * 40), dtype=np.uint8)})  # fmt: skip
    (tmp_path / "model.bin").write_bytes(b"\0" * 16)
    cases = {
        "vocab.gguf": "token 40 is 'X' in the artifact",
        "deeper.gguf": "num_hidden_layers is 3 in the artifact but 2 in the base model",
        "float.gguf": "holds no quantized tensor",
        "q8_1.gguf": "type Q8_1, which gguf-py cannot dequantize",
        "missing.gguf": "variant model not found",
        "model.bin": "unsupported artifact format",
    }
    for name, message in cases.items():
        out = tmp_path / f"out-{name}"
        code = main(["run", "--model", str(base), "--suite", str(tiny_suite), "--out", str(out),
                     "--variant-models", str(tmp_path / name), "--no-progress"])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert code == EXIT_USAGE, name
        assert message in err[-1] and err[-1].startswith("qharness: error"), (name, err[-1])
        assert not out.exists(), name


def test_artifact_rows_resume_by_content_not_path(grid_base, tiny_suite, tmp_path):
    out = tmp_path / "run"
    moved = tmp_path / "elsewhere" / "base-q8_0.gguf"
    moved.parent.mkdir()
    shutil.copy(grid_base / "base-q8_0.gguf", moved)
    args = ["--model", str(grid_base / "base"), "--suite", str(tiny_suite)]
    assert run_cli([*args, "--variant-models", str(grid_base / "base-q8_0.gguf")], out)[0] in (0, 1)
    parts = sorted(p.name for p in (out / "parts").iterdir())
    assert run_cli([*args, "--variant-models", str(moved)], out)[0] in (0, 1)  # same bytes: resumed
    assert sorted(p.name for p in (out / "parts").iterdir()) == parts
    changed = tmp_path / "changed" / "base-q8_0.gguf"
    changed.parent.mkdir()
    shutil.copy(grid_base / "base-q4_0.gguf", changed)  # another file under the same name
    assert run_cli([*args, "--variant-models", str(changed)], out)[0] == EXIT_USAGE


def test_variants_file_model_entries(grid_base, tmp_path):
    from harness.quant.variants import load_variants

    path = tmp_path / "v.yaml"
    path.write_text(
        f"- {{method: rtn, bits: 4}}\n- {{model: {grid_base / 'base-q4_0.gguf'}, name: shipped}}\n"
    )
    variants = load_variants(path)
    assert [v.name for v in variants] == ["rtn-w4g128", "shipped"]
    assert variants[1].artifact == Artifact(str(grid_base / "base-q4_0.gguf"))
    path.write_text(f"- {{model: {grid_base / 'base-q4_0.gguf'}, bits: 4}}\n")
    with pytest.raises(InputError, match="unknown key 'bits' for a model entry"):
        load_variants(path)


def test_a_variant_with_non_finite_outputs_fails_by_name_and_never_crashes(
    grid_base, tiny_suite, tokenizer, tmp_path, capsys
):
    """A shipped GGUF whose embedding row of the character "3" is infinite: every item
    whose text reaches that token has NaN logits from there on. Those items count as
    wrong (perplexity infinite); the rest are scored as usual; the gate fails the variant
    naming non-finite outputs; decoding and the reports go through."""
    model = on_q8_0_grid(make_model(len(tokenizer), seed=3))  # the base, as in grid_base
    with torch.no_grad():
        model.model.embed_tokens.weight[tokenizer.convert_tokens_to_ids("3")] = math.inf
    broken = write_gguf(model, tokenizer, tmp_path / "broken.gguf", "Q8_0",
                        types={"token_embd.weight": "F32"})  # fmt: skip
    out = tmp_path / "run"
    code, err = run_cli(["--model", str(grid_base / "base"), "--suite", str(tiny_suite),
                     "--variant-models", str(broken)], out, capsys)  # fmt: skip
    assert code == EXIT_GATE_FAILED, err
    items = pd.read_parquet(out / "items.parquet")
    shipped = items[items["variant"] == "broken"].set_index("item_id")
    assert not items[items["variant"] == "baseline"]["nonfinite"].any()
    hit = shipped[shipped["nonfinite"] > 0]
    assert {"t3", "m3"} <= set(hit.index) and len(hit) < len(shipped)
    assert (hit["correct"] != True).all() and (hit["nll"] == math.inf).all()  # noqa: E712
    assert (hit["kld"] == math.inf).all()
    clean = shipped[shipped["nonfinite"] == 0]
    assert np.isfinite(clean["nll"]).all() and np.isfinite(clean["kld"]).all()
    gate = json.loads((out / "gate.json").read_text())
    named = [f for f in gate["findings"] if f["rule"] == "finite outputs"]
    assert {f["task"] for f in named} >= {"text", "mc"}
    assert all("non-finite outputs (NaN/Inf logits)" in f["message"] for f in named)
    assert "non-finite outputs (NaN/Inf logits)" in (out / "report.html").read_text()


def test_a_baseline_with_non_finite_outputs_is_refused(tokenizer, tiny_suite, tmp_path, capsys):
    model = make_model(len(tokenizer), seed=3)
    with torch.no_grad():
        model.model.embed_tokens.weight[tokenizer.convert_tokens_to_ids("3")] = math.nan
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    code, err = run_cli(["--model", str(tmp_path / "base"), "--suite", str(tiny_suite), "--bits", "8"],
                    tmp_path / "run", capsys)  # fmt: skip
    assert code == EXIT_USAGE
    assert "the baseline gave non-finite logits (NaN/Inf) on 1 of 4 items of task 'text'" in err
