"""A session's pieces: how a variant is made on the base model, item limits, headlines."""

from __future__ import annotations

import copy

import torch

from harness.engine.scorer import Scorer
from harness.engine.tasks import item_limit
from harness.quant.rtn import RTNConfig
from harness.records import ModelSpec, RunSpec, Task, Variant
from harness.run.session import baseline_record, headline, make_variant
from tests.engine.scoring import ppl_task, run_task


def test_variants_are_made_in_place_or_scored_through_a_quantized_cache(tiny_model, tokenizer):
    model = copy.deepcopy(tiny_model)
    scorer = Scorer(model, tokenizer.pad_token_id, max_length=512)
    weight = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    active, made = make_variant(
        model, scorer, Variant("rtn", RTNConfig(bits=4, group_size=32)), None, None, 4, 512
    )
    assert active is scorer and made["method"] == "rtn" and made["bits"] == 4
    assert not torch.equal(model.model.layers[0].mlp.down_proj.weight, weight)  # quantized in place
    active, made = make_variant(model, scorer, Variant("kv4", kv_bits=4), None, None, 4, 512)
    assert (
        active is not scorer
        and active.kv_bits == 4
        and active.reference_head is scorer.reference_head
    )
    assert made["method"] == "kv-cache" and made["bits"] == 4
    record = baseline_record(model)
    assert record["bits"] == 16 and record["model_bytes"] == 2 * sum(
        p.numel() for p in model.parameters()
    )


def test_item_limits_and_headlines(tmp_path, tiny_model, tokenizer):
    spec = RunSpec(model=ModelSpec(), suite_path=tmp_path, out=tmp_path, variants=(), limit=5)
    task = Task(name="t", kind="multiple_choice", data=None, metric="acc", limit=3)
    assert (
        item_limit(spec.limit, task) == 3
        and item_limit(spec.limit, Task("t", "generate", None)) == 5
    )
    assert (
        item_limit(RunSpec(ModelSpec(), tmp_path, tmp_path, ()).limit, Task("t", "generate", None))
        is None
    )
    rows, _ = run_task(ppl_task(tmp_path, window=64), tiny_model, tokenizer)
    ppl = torch.tensor([r.nll for r in rows]).sum() / sum(r.n_tokens for r in rows)
    assert headline(ppl_task(tmp_path, 64), rows) == f"perplexity {float(ppl.exp()):.3f}"
    assert headline(task, []) == "not evaluated"
