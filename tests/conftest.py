"""Shared fixtures: a tiny random Llama and a byte-level tokenizer, built in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def make_tokenizer():
    """A byte-level BPE tokenizer with no merges: one token per byte, plus specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<bos>", "<eos>", "<pad>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


def make_model(vocab_size: int, seed: int = 0, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a little more spread than the default init, so outputs vary
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    return model.eval()


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return make_model(len(tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer, tiny_model):
    """The tiny model and tokenizer saved as a local folder (safetensors)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    return path


@pytest.fixture()
def tiny_suite(tmp_path) -> Path:
    """A small suite with one task of each kind."""
    texts = [
        {"id": f"t{i}", "text": f"The quick brown fox number {i} jumps over the lazy dog. " * 3}
        for i in range(4)
    ]
    mc = [{"id": f"m{i}", "context": f"{i} plus one is", "choices": [str(i + 1), str(i + 2), "cat"],
           "answer": 0, "slices": ["easy"] if i % 2 else []} for i in range(5)]  # fmt: skip
    gen = [{"id": f"g{i}", "a": i, "b": 1, "answer": str(i + 1)} for i in range(5)]
    write_jsonl(tmp_path / "text.jsonl", texts)
    write_jsonl(tmp_path / "mc.jsonl", mc)
    write_jsonl(tmp_path / "gen.jsonl", gen)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        """
name: tiny
version: "1"
tasks:
  - {name: text, kind: perplexity, data: text.jsonl, slices: [general], window: 64}
  - {name: mc, kind: multiple_choice, data: mc.jsonl, slices: [arithmetic], prompt: "{context}"}
  - name: gen
    kind: generate
    data: gen.jsonl
    slices: [arithmetic]
    prompt: "{a} + {b} ="
    fewshot: 2
    fewshot_delimiter: "\\n"
    max_new_tokens: 3
""",
        encoding="utf-8",
    )
    return suite


def held_out_error(model, method: str, bits: int = 3, **options):
    """Quantize a copy of ``model`` with ``method`` on 16 sequences of seeded random
    tokens; the mean squared change of its logits on 8 held-out sequences, and the report."""
    import copy

    from harness.quant import make_config, quantize_
    from harness.quant.calibration import Calibration
    from harness.records import CalibrationSpec

    torch.manual_seed(8)
    tokens = torch.randint(3, 250, (24, 48))
    calib = Calibration(CalibrationSpec("memory"), tokens[:16], "sha")
    quantized = copy.deepcopy(model)
    report = quantize_(quantized, make_config(method, bits=bits, group_size=32, **options), calib)
    with torch.no_grad():
        error = float((quantized(tokens[16:]).logits - model(tokens[16:]).logits).pow(2).mean())
    return error, report
