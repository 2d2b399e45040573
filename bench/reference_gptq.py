"""The reference GPTQ for the methods benchmark: llm-compressor's ``GPTQModifier`` on the
same model, calibration tokens and text as ``bench/methods.py``, scored the same way.

llm-compressor pins its own transformers, so it runs in a separate environment; the
tokens cross over in one file:

    .venv/bin/python bench/methods.py --methods rtn --bits 4 --export /tmp/gptq-inputs.pt
    python -m venv /tmp/lc && /tmp/lc/bin/pip install torch==2.13.0 \
        && /tmp/lc/bin/pip install -c <(echo torch==2.13.0) llmcompressor==0.14.0.1
    /tmp/lc/bin/python bench/reference_gptq.py /tmp/gptq-inputs.pt --bits 4 [--act-order static]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F


@torch.inference_mode()
def log_probs(model, ids: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(model(input_ids=ids[None]).logits[0, :-1].float(), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", help="file written by bench/methods.py --export")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--act-order", default="static", help="static, group or none")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM

    data = torch.load(args.inputs, weights_only=True)
    model = AutoModelForCausalLM.from_pretrained(data["model"], dtype=torch.float32)
    ids = data["text"]
    base = log_probs(model, ids)
    weights = QuantizationArgs(num_bits=args.bits, type="int", symmetric=False, strategy="group",
                               group_size=args.group_size,
                               actorder=None if args.act_order == "none" else args.act_order)  # fmt: skip
    modifier = GPTQModifier(config_groups={"g": QuantizationScheme(targets=["Linear"], weights=weights)},
                            ignore=["lm_head"], actorder=None if args.act_order == "none" else args.act_order)  # fmt: skip
    calib = data["calibration"]
    dataset = Dataset.from_dict({"input_ids": calib.tolist(),
                                 "attention_mask": torch.ones_like(calib).tolist()})  # fmt: skip
    start = time.perf_counter()
    oneshot(model=model, dataset=dataset, recipe=[modifier], num_calibration_samples=len(calib),
            max_seq_length=calib.shape[1])  # fmt: skip
    seconds = time.perf_counter() - start
    logp = log_probs(model, ids)
    nll = -logp.gather(1, ids[1:, None]).mean()
    base_nll = -base.gather(1, ids[1:, None]).mean()
    print(json.dumps({"variant": f"llm-compressor-gptq-w{args.bits}g{args.group_size}-{args.act_order}",
                      "seconds": round(seconds, 1), "perplexity": round(float(nll.exp()), 3),
                      "ppl_ratio": round(float((nll - base_nll).exp()), 4),
                      "kld": round(float((base.exp() * (base - logp)).sum(-1).mean()), 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
