"""Integration on the embedded default model (SmolLM2-135M-Instruct, fetched once into
the cache): loading, perplexity against plain transformers, RTN at 8 and 2 bits."""

from __future__ import annotations

import math
import os

import pytest
import torch

from harness.data.suites import load_items, load_suite
from harness.diagnose.weights import base_precision
from harness.engine.scorer import Scorer
from harness.engine.tasks import evaluate_task, prepare
from harness.model.load import default_model_dir, load_model, prefix_token_id
from harness.quant import quantize_
from harness.quant.master import MasterCopy
from harness.quant.rtn import RTNConfig
from harness.records import ModelSpec
from tests.conftest import REPO

pytestmark = pytest.mark.slow
N_ITEMS = 4


@pytest.fixture(scope="module", autouse=True)
def every_core():
    """These tests quantize and score a 135M model: use every core (an in-process run
    elsewhere in the session may have left torch at one thread), then put it back."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def default_model():
    model, tokenizer = load_model(ModelSpec("default"))
    return model, tokenizer


@pytest.fixture(scope="module")
def text_task():
    suite = load_suite(REPO / "tasks" / "default.yaml")
    return next(t for t in suite.tasks if t.kind == "perplexity")


def perplexity_of(model, tokenizer, task, reference=None, n_items=N_ITEMS):
    items = load_items(task)[:n_items]
    prepared = prepare(task, items, tokenizer, prefix_token_id(tokenizer), items, seed=0)
    scorer = Scorer(model, tokenizer.pad_token_id, batch_size=4, max_length=2048)
    rows, topks = evaluate_task(task, prepared, scorer, tokenizer, "v", reference)
    ppl = math.exp(sum(r.nll for r in rows) / sum(r.n_tokens for r in rows))
    return ppl, rows, topks


def test_default_model_loads_from_the_cached_safetensors_folder(default_model):
    model, tokenizer = default_model
    assert (default_model_dir() / "model.safetensors").exists()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 2
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_engine_perplexity_equals_plain_transformers(default_model, text_task):
    model, tokenizer = default_model
    item = load_items(text_task)[0]
    ids = [tokenizer.bos_token_id] + tokenizer(item["text"], add_special_tokens=False)["input_ids"]
    assert len(ids) <= text_task.window  # one window: the plain computation is one forward
    with torch.no_grad():
        loss = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss
    prepared = prepare(text_task, [item], tokenizer, prefix_token_id(tokenizer), [item], seed=0)
    scorer = Scorer(model, tokenizer.pad_token_id, batch_size=1, max_length=2048)
    rows, _ = evaluate_task(text_task, prepared, scorer, tokenizer, "baseline", None)
    assert math.exp(rows[0].nll / rows[0].n_tokens) == pytest.approx(
        math.exp(float(loss)), rel=1e-4
    )


def test_rtn_8bit_is_near_free_and_2bit_collapses(default_model, text_task):
    model, tokenizer = default_model
    master = MasterCopy(model)
    base, _, reference = perplexity_of(model, tokenizer, text_task)
    results = {}
    for bits in (8, 2):
        master.restore()
        quantize_(model, RTNConfig(bits=bits, group_size=128))
        results[bits], rows, _ = perplexity_of(model, tokenizer, text_task, reference)
        results[f"kld{bits}"] = sum(r.kld * r.n_tokens for r in rows) / sum(
            r.n_tokens for r in rows
        )
    master.restore()
    assert 10 < base < 40
    assert abs(results[8] / base - 1) < 0.01, results
    assert results[2] > 10 * base, results
    assert results["kld8"] < 0.01 < results["kld2"]
    assert perplexity_of(model, tokenizer, text_task)[0] == pytest.approx(
        base, rel=1e-6
    )  # restored


def test_base_precision_check_flags_the_default_model_as_dequantized_4bit(default_model):
    model, _ = default_model
    report = base_precision(model)
    assert report["flagged"] and report["grid_bits"] == 4
    assert report["share_at_most_2_to_b"][4] > 0.99 and report["share_at_most_2_to_b"][3] < 0.5


def test_methods_on_the_default_model(default_model, text_task):
    """Published findings reproduced: the calibration methods (GPTQ, AWQ) beat RTN at 4
    and 3 bits; 8-bit weights are close to free (within 1% for rtn, hqq and gguf Q8_0;
    within 5% for every method), 8-bit weights and activations (W8A8) within 10%. The
    calibration budget is cut to fit the suite's time (8 × 256 tokens; AWQ's search on 4
    of them over 10 exponents)."""
    from harness.quant import make_config
    from harness.quant.calibration import DEFAULT_SOURCE, item_texts, load_calibration
    from harness.records import CalibrationSpec

    model, tokenizer = default_model
    master = MasterCopy(model)
    base, _, _ = perplexity_of(model, tokenizer, text_task, n_items=2)
    evaluated = load_items(text_task)[:2]
    calib = load_calibration(CalibrationSpec(REPO / DEFAULT_SOURCE, n_samples=8, seq_len=256),
                             tokenizer, item_texts(evaluated), prefix_token_id(tokenizer))  # fmt: skip
    cheap_awq = {"search_samples": 4, "batch_size": 4, "grid_size": 10}
    runs = [("rtn", 4, {}), ("gptq", 4, {}), ("awq", 4, cheap_awq), ("rtn", 3, {}), ("gptq", 3, {}),
            ("awq", 3, cheap_awq), ("rtn", 8, {}), ("hqq", 8, {}), ("gguf", 8, {}), ("bnb", 8, {}),
            ("torchao", 8, {}), ("torchao", 8, {"group_size": None, "activations": "int8"})]  # fmt: skip
    ppl = {}
    for method, bits, options in runs:
        master.restore()
        grouped = {} if method in ("bnb", "gguf") else {"group_size": 64}
        config = make_config(method, bits=bits, **{**grouped, **options})
        quantize_(model, config, calib)
        ppl[config.variant_name] = perplexity_of(model, tokenizer, text_task, n_items=2)[0]
    master.restore()
    for bits in (4, 3):
        for method in ("gptq", "awq"):
            assert ppl[f"{method}-w{bits}g64"] < ppl[f"rtn-w{bits}g64"], ppl
    for name in ("rtn-w8g64", "hqq-w8g64", "gguf-w8g32"):
        assert abs(ppl[name] / base - 1) < 0.01, (name, ppl, base)
    for name in ("bnb-w8", "torchao-w8g64"):
        assert abs(ppl[name] / base - 1) < 0.05, (name, ppl, base)
    # quantizing activations too costs more on this model (outlier channels): +3-5%
    assert ppl["torchao-w8g64"] < ppl["torchao-w8a8"] < 1.10 * base, ppl


@pytest.mark.parametrize("config", [{"method": "gguf", "bits": 4, "qtype": "Q4_0"},
                                    {"method": "rtn", "bits": 4, "group_size": 128}])  # fmt: skip
def test_kld_matches_the_full_vocabulary_value(default_model, text_task, config):
    """The engine's KLD against a plain full-vocabulary computation from
    ``model(...).logits`` on one text (the issue's bar: within 2%; the top-128 summary of
    earlier versions was ~10% low)."""
    from harness.quant import make_config

    model, tokenizer = default_model
    master = MasterCopy(model)
    item = load_items(text_task)[0]
    ids = [tokenizer.bos_token_id] + tokenizer(item["text"], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        p = model(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
    _, _, reference = perplexity_of(model, tokenizer, text_task)
    try:
        quantize_(model, make_config(**config))
        with torch.no_grad():
            q = model(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
        _, rows, _ = perplexity_of(model, tokenizer, text_task, reference)
    finally:
        master.restore()
    exact = float((p.exp() * (p - q)).sum(-1).mean())
    row = next(r for r in rows if r.item_id == item["id"])
    assert row.kld == pytest.approx(exact, rel=0.02)
    assert row.kld == pytest.approx(exact, rel=1e-3)  # in fact exact up to float16 storage
