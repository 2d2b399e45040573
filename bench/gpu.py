"""The engine on an accelerator against the bare forward-pass floor on the same requests.

    python bench/gpu.py --size 8b                     # a Llama-3-8B-shaped model, bf16, CUDA
    python bench/gpu.py --size tiny --device cpu      # a smoke run anywhere

Builds a Llama-shaped model with random weights in-process (timing does not depend on
the weights), prepares the suite's requests with the default model's tokenizer, then
measures: (1) the floor — one forward pass over every distinct token row in
length-sorted batches of at most ``--floor-tokens`` tokens; (2) the harness — the
baseline (keeping its reference hidden states) and one variant pass against them (full
KLD, top-1, per-item rows), task by task as a run does, with decoding. Prints the
ratio to the floor, tokens/s, peak accelerator memory and the accelerator's busy share
(sampled every 0.2 s through NVML, when available).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.suites import load_suite  # noqa: E402
from harness.engine.kinds import kind_of  # noqa: E402
from harness.engine.scorer import Scorer  # noqa: E402
from harness.engine.tasks import evaluate_task, prepare_suite  # noqa: E402
from harness.model.load import load_tokenizer, prefix_token_id  # noqa: E402
from harness.records import ModelSpec  # noqa: E402

SIZES = {  # hidden, intermediate, layers, heads, kv heads
    "tiny": (256, 688, 4, 8, 4),
    "1b": (2048, 8192, 16, 32, 8),
    "8b": (4096, 14336, 32, 32, 8),
}


def build(size: str, vocab: int, dtype: torch.dtype, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, kv = SIZES[size]
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=8192,
                         tie_word_embeddings=False)  # fmt: skip
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval()


class Busy:
    """The accelerator's utilisation, sampled in the background (NVML)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.running = torch.cuda.is_available()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self.running:
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # no NVML: no figure
                return
            time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False

    @property
    def share(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def floor(model, rows: list[list[int]], pad: int, budget: int, device: str) -> float:
    """Seconds for one forward pass over ``rows`` (final hidden states only)."""
    rows = sorted(rows, key=len, reverse=True)
    start = time.perf_counter()
    i = 0
    while i < len(rows):
        width = len(rows[i])
        n = max(1, budget // width)
        batch = rows[i : i + n]
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(batch):
            ids[r, width - len(row) :] = torch.tensor(row)
            mask[r, width - len(row) :] = 1
        model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        i += n
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    parser.add_argument("--suite", type=Path, default=Path("tasks/default.yaml"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--floor-tokens", type=int, default=65536)
    args = parser.parse_args()
    tokenizer = load_tokenizer(ModelSpec("default"))
    prefix = prefix_token_id(tokenizer)
    start = time.perf_counter()
    model = build(args.size, len(tokenizer), getattr(torch, args.dtype), args.device)
    sync(args.device)
    build_s = time.perf_counter() - start
    suite = load_suite(args.suite)
    tasks = [t for t in suite.tasks if kind_of(t).itemized]
    prepared = prepare_suite(suite, tokenizer, prefix, seed=0)
    rows = {
        tuple((ctx + cont)[:-1])
        for items in prepared.values()
        for item in items
        for ctx, cont in item.requests
    }
    tokens = sum(map(len, rows))
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    floor_s = floor(
        model, [list(r) for r in rows], tokenizer.pad_token_id, args.floor_tokens, args.device
    )
    scorer = Scorer(model, tokenizer.pad_token_id, batch_size=args.batch_size, max_length=8192)
    with Busy() as busy:
        start = time.perf_counter()
        references = {
            t.name: evaluate_task(t, prepared[t.name], scorer, tokenizer, "baseline", None)[1]
            for t in tasks
        }
        sync(args.device)
        baseline_s = time.perf_counter() - start
        start = time.perf_counter()
        for task in tasks:
            evaluate_task(
                task, prepared[task.name], scorer, tokenizer, "variant", references[task.name]
            )
        sync(args.device)
        variant_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(
        f"model: {args.size} Llama-shaped, {params:.2f}B parameters, {args.dtype}, built in {build_s:.1f} s"
    )
    print(f"requests: {len(rows)} distinct token rows, {tokens} tokens")
    print(f"floor: {floor_s:.2f} s ({tokens / floor_s:,.0f} tokens/s)")
    print(f"harness baseline: {baseline_s:.2f} s ({baseline_s / floor_s:.2f}x the floor)")
    print(
        f"harness variant (with full KLD): {variant_s:.2f} s ({variant_s / floor_s:.2f}x the floor)"
    )
    print(f"peak accelerator memory: {f'{peak:.1f} GiB' if peak is not None else 'n/a'}; "
          f"busy share: {f'{busy.share:.0%}' if busy.share is not None else 'n/a'}")  # fmt: skip


if __name__ == "__main__":
    main()
