"""Method quality benchmark: every chosen method × bit width on the default model, scored
on one held-out text by perplexity ratio and full-vocabulary KLD against the base model,
with effective bits per weight and quantization time. Writes bench/methods.json.

The text (default: the Apache-2.0 licence shipped with accelerate, a dependency) is
never calibration data; calibration is the harness's own (``tasks/data/calibration.jsonl``,
32 × 256 tokens, seed 0 unless changed).

    python bench/methods.py [--methods rtn,gptq,awq] [--bits 8,4,3,2] [--options k=v,...]
                            [--variants FILE] [--threads 2] [--tokens 2048] [--text FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def licence_text() -> Path:
    dist = importlib.metadata.distribution("accelerate")
    for file in dist.files or ():
        if file.name in ("LICENSE", "LICENSE.txt"):
            return Path(dist.locate_file(file))
    raise SystemExit("no licence text found in accelerate's metadata; pass --text")


def parse_options(text: str) -> dict:
    options = {}
    for pair in filter(None, text.split(",")):
        key, value = pair.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@torch.inference_mode()
def log_probs(model, ids: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the vocabulary at every position but the last ``[n-1, vocab]``."""
    return F.log_softmax(model(input_ids=ids[None]).logits[0, :-1].float(), dim=-1)


def measure(model, ids: torch.Tensor, base: torch.Tensor) -> dict:
    logp = log_probs(model, ids)
    nll = -logp.gather(1, ids[1:, None]).mean().item()
    base_nll = -base.gather(1, ids[1:, None]).mean().item()
    kld = (base.exp() * (base - logp)).sum(-1).mean().item()
    top1 = (base.argmax(-1) == logp.argmax(-1)).float().mean().item()
    return {"perplexity": round(float(torch.tensor(nll).exp()), 3),
            "ppl_ratio": round(float(torch.tensor(nll - base_nll).exp()), 4),
            "kld": round(kld, 4), "top1": round(top1, 4)}  # fmt: skip


def configs(args):
    """Each method at each width (``--options`` where the method has them), or the
    method entries of a ``--variants`` file; a pair that cannot be made is skipped."""
    import dataclasses

    from harness.quant import METHODS, make_config
    from harness.quant.variants import load_variants

    if args.variants:
        yield from (v.config for v in load_variants(args.variants) if v.config and not v.kv_bits)
        return
    for method in args.methods.split(","):
        fields = {f.name for f in dataclasses.fields(METHODS.get(method))}
        options = {k: v for k, v in parse_options(args.options).items() if k in fields}
        for bits in map(int, args.bits.split(",")):
            try:
                yield make_config(method, bits=bits, **options)
            except Exception as exc:  # noqa: BLE001 - a bench row, not a crash
                print(f"{method} w{bits}: skipped ({exc})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="rtn,gptq,awq")
    parser.add_argument("--bits", default="8,4,3,2")
    parser.add_argument(
        "--options", default="group_size=64", help="k=v,... for every method that has the option"
    )
    parser.add_argument("--variants", type=Path, help="a variants file instead (method entries)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--text", type=Path)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--no-bos", action="store_true", help="calibration windows without BOS")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "methods.json")
    parser.add_argument("--export", type=Path, help="also save the model folder, text and "
                        "calibration tokens for bench/reference_gptq.py")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from harness.model.load import load_model, prefix_token_id, weight_files
    from harness.quant import quantize_
    from harness.quant.calibration import load_calibration
    from harness.quant.master import MasterCopy
    from harness.records import CalibrationSpec, ModelSpec

    spec = ModelSpec()
    model, tokenizer = load_model(spec)
    master = MasterCopy(model, weight_files(spec))
    text = (args.text or licence_text()).read_text(encoding="utf-8")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: args.tokens - 1]
    ids = torch.tensor([prefix_token_id(tokenizer), *ids])
    calib = load_calibration(
        CalibrationSpec(REPO / "tasks/data/calibration.jsonl", args.samples, args.seq_len),
        tokenizer, [text], prefix=None if args.no_bos else prefix_token_id(tokenizer),
    )  # fmt: skip
    if args.export:
        from harness.model.load import model_source

        torch.save(
            {"model": model_source(spec), "text": ids, "calibration": calib.tokens}, args.export
        )
    base = log_probs(model, ids)
    results = []
    print(f"text: {len(ids)} tokens; base perplexity "
          f"{float((-base.gather(1, ids[1:, None]).mean()).exp()):.3f}")  # fmt: skip
    for config in configs(args):
        master.restore()
        start = time.perf_counter()
        report = quantize_(model, config, calib)
        row = {"variant": config.variant_name, "method": config.method, "bits": config.bits,
               "effective_bits": round(report.effective_bits, 3),
               "seconds": round(time.perf_counter() - start, 1), **measure(model, ids, base)}  # fmt: skip
        results.append(row)
        print(json.dumps(row), flush=True)
    master.restore()
    args.out.write_text(json.dumps({"threads": args.threads, "tokens": len(ids),
                                    "calibration": [args.samples, args.seq_len],
                                    "results": results}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
