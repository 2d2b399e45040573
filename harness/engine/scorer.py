"""Batched scoring of token continuations, and greedy generation.

A request is ``(context_ids, continuation_ids)``. For each request the scorer returns
the log-probability of every continuation token, whether greedy decoding would have
produced the continuation, and — against the baseline — the exact KL divergence of the
full next-token distributions, top-1 agreement and the change of the gold token's
probability at every scored position.

The baseline's reference is its final hidden state at each scored position (16 bits
where that is exact enough, see :func:`compact`). A variant recomputes the baseline's
whole distribution from it with the baseline's own output head (:class:`ReferenceHead`),
so KL divergence covers the full vocabulary (as llama.cpp's ``--kl-divergence`` does)
while storing ``hidden_size`` numbers per position instead of ``vocab_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.engine.kvcache import cached_hidden, prefilled_cache
from harness.errors import InputError
from harness.records import Reference


@dataclass
class Scored:
    token_logprobs: torch.Tensor  # [n] float64
    greedy: bool
    hidden: torch.Tensor | None = None  # [n, d] kept when scoring the baseline (the reference)
    kld: torch.Tensor | None = None  # [n] float64: KL(baseline || variant), full vocabulary
    top1: torch.Tensor | None = None  # [n] bool, argmax equals the baseline's
    dp: torch.Tensor | None = None  # [n] float64: p_variant(gold) - p_baseline(gold)
    argmax: torch.Tensor | None = None  # [n] the greedy token at each scored position
    next_token: int | None = None  # greedy token after the continuation (``next_token=True``)
    nonfinite: int = 0  # scored positions whose logits held NaN or Inf (scored as worst)


def scale_logits(model: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Every scaling a causal LM applies after its output embedding: Granite divides by
    ``logits_scaling``, Cohere multiplies by ``logit_scale``, Gemma 2/3 soft-cap.
    :func:`check_output_head` proves the result equals ``model(...).logits``."""
    config = model.config
    scaling = getattr(config, "logits_scaling", None)
    if scaling and scaling != 1:
        logits = logits / scaling
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, int | float) and scale != 1:
        logits = logits * scale
    softcap = getattr(config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def output_logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The model's logits from its final hidden states (its head is looked up each time:
    a method may swap it)."""
    return scale_logits(model, model.get_output_embeddings()(hidden))


@torch.inference_mode()
def check_output_head(model: torch.nn.Module) -> None:
    """Refuse a model whose logits :func:`output_logits` does not reproduce: scoring from
    hidden states must give exactly what ``model(...).logits`` gives."""
    device = next(model.parameters()).device
    ids = torch.arange(3, 11, device=device)[None] % model.config.vocab_size
    own = model(input_ids=ids, use_cache=False).logits.float()
    hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state
    ours = output_logits(model, hidden).float()
    gap = float((own - ours).abs().max())
    if not gap <= 1e-3 * max(1.0, float(own.abs().max())):
        raise InputError(
            f"{type(model).__name__}: its logits are not its output embedding of the final "
            f"hidden states (max difference {gap:.3g}); it applies an output transform the "
            "harness does not know, so its scores would be wrong"
        )


class ReferenceHead:
    """The baseline's output head, to turn stored hidden states back into the baseline's
    full distribution while a variant is loaded.

    It holds the live head weight (no copy) as long as nothing changed it; call
    :meth:`keep_copy` before a method that quantizes the head. A head changed without
    that is an error, never a silently wrong reference.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        module = model.get_output_embeddings()
        self.weight, self.bias = module.weight, module.bias
        self.version = self.weight._version
        self.copy: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def keep_copy(self) -> None:
        if self.copy is None:
            self._check()
            self.copy = (self.weight.detach().clone(),
                         None if self.bias is None else self.bias.detach().clone())  # fmt: skip

    def _check(self) -> None:
        live = self.model.get_output_embeddings()
        if getattr(live, "weight", None) is not self.weight or self.weight._version != self.version:
            raise RuntimeError("the baseline's output head was changed in place without "
                               "ReferenceHead.keep_copy(); its reference is lost")  # fmt: skip

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.copy is None:
            self._check()
        weight, bias = self.copy or (self.weight, self.bias)
        return scale_logits(self.model, F.linear(hidden.to(weight.dtype), weight, bias))


def compact(hidden: torch.Tensor) -> torch.Tensor:
    """Hidden states for storage: float16 when they fit its range (the baseline's
    distribution recomputed from them differs by a KL of ~1e-7), else unchanged."""
    if hidden.dtype == torch.float32 and hidden.numel() and float(hidden.abs().max()) < 3e4:
        return hidden.half()
    return hidden


def token_kld(base_logp: torch.Tensor, var_logp: torch.Tensor) -> torch.Tensor:
    """Per-position KL(baseline || variant) over the full vocabulary (summed in float32,
    returned as float64)."""
    kl = F.kl_div(var_logp.float(), base_logp.float(), log_target=True, reduction="none")
    return kl.sum(dim=-1).clamp(min=0.0).double()


CHUNK = 64  # positions whose vocabulary-wide log-probabilities are held at once (12 MB each here)
# Tokens per padded batch. On CPU, long rows batched together are slower *and* heavier than
# one at a time (a padded batch takes attention's materialised path; measured on the default
# suite's long tasks at 1 thread: 4096 tokens 71 s and 1.24 GB peak, 1024 tokens 55 s and
# 1.15 GB), while short rows still fill ``batch_size``. Accelerators want wide batches.
MAX_BATCH_TOKENS = {"cpu": 1024}
MAX_BATCH_TOKENS_ACCELERATOR = 16384


class Scorer:
    """Scores requests on ``model`` in length-sorted, left-padded batches."""

    def __init__(
        self,
        model: torch.nn.Module,
        pad_id: int,
        *,
        batch_size: int = 8,
        max_batch_tokens: int | None = None,
        max_length: int = 2048,
        reference_head: ReferenceHead | None = None,
        kv_bits: int | None = None,
    ) -> None:
        """``reference_head``: the baseline's head, for comparing to stored references
        (default: this model's head as it is now, before any method touched it).
        ``kv_bits``: read keys and values back from a quantized cache (see
        :mod:`harness.engine.kvcache`); rows are then scored one at a time, so a row's
        split between prefill and answer never depends on its batch."""
        check_output_head(model)
        self.kv_bits = kv_bits
        if kv_bits is not None:
            batch_size = 1
        self.model = model
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = next(model.parameters()).device
        self.max_batch_tokens = max_batch_tokens or MAX_BATCH_TOKENS.get(
            self.device.type, MAX_BATCH_TOKENS_ACCELERATOR
        )
        self.reference_head = reference_head or ReferenceHead(model)

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches, current = [], []
        for i in order:
            width = lengths[current[0]] if current else lengths[i]
            if current and (
                len(current) >= self.batch_size
                or width * (len(current) + 1) > self.max_batch_tokens
            ):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    @torch.inference_mode()
    def score(
        self,
        requests: list[tuple[list[int], list[int]]],
        references: list[Reference | None] | None = None,
        keep_hidden: bool = False,
        on_batch=None,
        next_token: bool = False,
    ) -> list[Scored]:
        """Score every request; compare to ``references[i]`` where one is given. With
        ``next_token`` the whole continuation is fed too, and the greedy token after it is
        returned (greedy decoding that follows the gold answer needs no other pass)."""
        extra = int(next_token)
        inputs = []
        for ctx, cont in requests:
            if not cont:
                raise ValueError("a request needs at least one continuation token")
            if len(cont) > self.max_length:
                raise ValueError(
                    f"a continuation of {len(cont)} tokens exceeds max_length {self.max_length}"
                )
            inputs.append((ctx + cont)[: len(ctx) + len(cont) - 1 + extra][-self.max_length :])
        # lm-eval's grouping: requests whose input rows are equal (choices that differ only
        # in their last token, or repeats) share one forward pass
        rows: dict[tuple[int, ...], list[int]] = {}
        for i, row in enumerate(inputs):
            rows.setdefault(tuple(row), []).append(i)
        unique = list(rows)
        results: list[Scored | None] = [None] * len(requests)
        for batch in self._batches([len(u) for u in unique]):
            width = max(len(unique[b]) for b in batch)
            keep = max(len(requests[i][1]) for b in batch for i in rows[unique[b]]) + extra
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, b in enumerate(batch):
                ids[row, width - len(unique[b]) :] = torch.tensor(unique[b])
                mask[row, width - len(unique[b]) :] = 1
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
            hidden = self._hidden(ids, mask, positions, keep)
            owners = [(row, i) for row, b in enumerate(batch) for i in rows[unique[b]]]
            scored = self._score_positions(
                [
                    hidden[row, keep - extra - len(requests[i][1]) : keep - extra]
                    for row, i in owners
                ],
                [requests[i][1] for _, i in owners],
                [references[i] if references is not None else None for _, i in owners],
                keep_hidden,
            )
            if next_token:
                after = output_logits(self.model, hidden[[row for row, _ in owners], -1]).argmax(
                    dim=-1
                )
                for result, token in zip(scored, after.tolist(), strict=True):
                    result.next_token = int(token)
            for (_, i), result in zip(owners, scored, strict=True):
                results[i] = result
            if on_batch is not None:
                on_batch(sum(len(rows[unique[b]]) for b in batch))
        return results  # type: ignore[return-value]

    def _hidden(self, ids, mask, positions, keep: int) -> torch.Tensor:
        """The last ``keep`` positions' final hidden states ``[batch, keep, d]``: the head
        is applied per request in :meth:`_logits`, so a long perplexity window never holds
        a whole batch of vocabulary-wide logits at once."""
        if self.kv_bits is not None:
            return cached_hidden(self.model, ids.to(self.device), mask.to(self.device),
                                 positions.to(self.device), keep, self.kv_bits)  # fmt: skip
        out = self.model.base_model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=False,
        )
        return out.last_hidden_state[:, -keep:]

    def _score_positions(self, hiddens: list[torch.Tensor], conts: list[list[int]], refs: list,
                         keep_hidden: bool) -> list[Scored]:  # fmt: skip
        """Score a batch's continuations from their final hidden states: every scored
        position goes through the head together, ``CHUNK`` positions at a time (one
        1k-token window's full log-softmax alone would take 400 MB). Where a reference is
        given, the baseline's distribution is recomputed from it chunk by chunk too."""
        hidden = torch.cat(hiddens)
        targets = torch.tensor([t for cont in conts for t in cont])
        bounds = torch.tensor([0, *(len(c) for c in conts)]).cumsum(0).tolist()
        with_ref = [n for n, ref in enumerate(refs) if ref is not None]
        has_ref = torch.zeros(len(targets), dtype=torch.bool)
        for n in with_ref:
            has_ref[bounds[n] : bounds[n + 1]] = True
        ref_hidden = torch.cat([refs[n].hidden for n in with_ref]) if with_ref else None
        ref_argmax = torch.cat([refs[n].argmax for n in with_ref]).long() if with_ref else None
        ref_row = has_ref.long().cumsum(0) - 1  # position -> row of ref_hidden
        lp, argmax, bad = [], [], []
        kld = torch.zeros(len(targets), dtype=torch.float64)
        dp = torch.zeros(len(targets), dtype=torch.float64)
        top1 = torch.zeros(len(targets), dtype=torch.bool)
        for start in range(0, len(targets), CHUNK):
            stop = min(start + CHUNK, len(targets))
            logits = output_logits(self.model, hidden[start:stop]).float()
            logp = F.log_softmax(logits, dim=-1).cpu()
            broken = ~torch.isfinite(logits).all(dim=-1).cpu()
            logp[broken] = -math.inf  # a broken position is the worst: probability 0 everywhere
            bad.append(broken)
            gold = targets[start:stop, None]
            lp.append(logp.gather(1, gold)[:, 0].double())
            argmax.append(logp.argmax(dim=-1).masked_fill(broken, -1))
            local = has_ref[start:stop]
            if local.any():
                at = ref_row[start:stop][local].to(ref_hidden.device)
                base = self.reference_head(ref_hidden[at].to(self.device))
                base = F.log_softmax(base.float(), dim=-1).cpu()
                mine = logp[local]
                kld[start:stop][local] = token_kld(base, mine)
                top1[start:stop][local] = ref_argmax[at.cpu()] == argmax[-1][local]
                g = gold[local]
                dp[start:stop][local] = (mine.gather(1, g).double().exp()
                                         - base.gather(1, g).double().exp())[:, 0]  # fmt: skip
        lp, argmax, bad = torch.cat(lp), torch.cat(argmax), torch.cat(bad)
        kept = compact(hidden.detach().cpu()) if keep_hidden else None
        out = []
        for n, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            scored = Scored(token_logprobs=lp[a:b], greedy=bool((argmax[a:b] == targets[a:b]).all()),
                            argmax=argmax[a:b], nonfinite=int(bad[a:b].sum()))  # fmt: skip
            if keep_hidden:
                scored.hidden = kept[a:b]
            if refs[n] is not None:
                scored.kld, scored.top1, scored.dp = kld[a:b], top1[a:b], dp[a:b]
            out.append(scored)
        return out

    @staticmethod
    def greedy_from_scores(
        scored: Scored, gold: list[int], max_new_tokens: int, stop: tuple[str, ...], tokenizer
    ) -> tuple[list[int], bool]:
        """Greedy decoding read off a teacher-forced pass over prompt + gold: while the
        greedy token equals the gold one the histories agree, so that pass already holds
        every greedy choice up to the first divergence (and the one after the gold answer).
        Returns the greedy tokens known and whether decoding ends there."""
        tokens: list[int] = []
        for position, token in enumerate([*scored.argmax.tolist(), scored.next_token]):
            if token < 0:  # non-finite logits: nothing to decode from
                return tokens, True
            tokens.append(token)
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            if token == tokenizer.eos_token_id or any(s and s in text for s in stop):
                return tokens, True
            if len(tokens) == max_new_tokens:
                return tokens, True
            if position < len(gold) and token != gold[position]:
                return tokens, False  # diverged: decode on from here
        return tokens, False

    @staticmethod
    def finish_text(tokens: list[int], stop: tuple[str, ...], tokenizer) -> str:
        """Generated tokens as text, cut at the first stop string."""
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        for s in stop:
            text = text.split(s)[0] if s else text
        return text

    @torch.inference_mode()
    def generate_ids(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        stop: tuple[str, ...],
        tokenizer,
        on_batch=None,
    ) -> list[list[int]]:
        """The greedy tokens generated after each prompt (to a stop string, EOS or the limit)."""
        from transformers import GenerationConfig

        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=tokenizer.eos_token_id,
            stop_strings=list(stop) or None,
        )
        keep = max(1, self.max_length - max_new_tokens)  # left-truncated, as rows are
        prompts = [p[-keep:] for p in prompts]
        outputs: list[list[int] | None] = [None] * len(prompts)
        for batch in self._batches([len(p) for p in prompts]):
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]) :] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            cache = (
                None
                if self.kv_bits is None
                else prefilled_cache(self.model, ids[:, :-1], mask[:, :-1], self.kv_bits)
            )
            generated = self.model.generate(input_ids=ids, attention_mask=mask, cache=cache,
                                            generation_config=config, tokenizer=tokenizer)  # fmt: skip
            for row, i in enumerate(batch):
                outputs[i] = generated[row, width:].tolist()
            if on_batch is not None:
                on_batch(len(batch))
        return outputs  # type: ignore[return-value]
