"""Batched scoring of token continuations, and greedy generation.

A request is ``(context_ids, continuation_ids)``. For each request the scorer returns
the log-probability of every continuation token, whether greedy decoding would have
produced the continuation, and the next-token distributions at those positions —
summarised as their top-k (kept for the baseline), or compared to the baseline's
summary (mean KL divergence and top-1 agreement, for a variant).

KL divergence from a top-k summary: the baseline keeps its k most likely tokens per
position and the variant's distribution is coarse-grained the same way (those k tokens
plus one bucket for the rest). The result is the exact KL between the coarse-grained
distributions: a lower bound on the full KL that is exact when the baseline's tail
mass is zero (and always when k >= vocabulary size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TopK:
    """A model's k most likely next tokens at each scored position."""

    idx: torch.Tensor  # [n, k] int32
    logp: torch.Tensor  # [n, k] float32


@dataclass
class Scored:
    token_logprobs: torch.Tensor  # [n] float64
    greedy: bool
    topk: TopK | None = None  # kept when scoring the baseline
    kld: torch.Tensor | None = None  # [n] float64, vs the reference
    top1: torch.Tensor | None = None  # [n] bool, argmax equals the reference's
    argmax: torch.Tensor | None = None  # [n] the greedy token at each scored position
    next_token: int | None = None  # greedy token after the continuation (``next_token=True``)


def kl_from_topk(var_logp: torch.Tensor, ref: TopK) -> torch.Tensor:
    """Per-position KL(reference || variant) over the reference's top-k plus a tail bucket.

    ``var_logp`` holds the variant's full log-softmax rows, ``[n, vocab]``.
    """
    p_log = ref.logp.double()
    q_log = var_logp.gather(1, ref.idx.long()).double()
    p = p_log.exp()
    head = (p * (p_log - q_log)).sum(dim=1)
    p_rest = (1.0 - p.sum(dim=1)).clamp(min=0.0)
    q_rest = (1.0 - q_log.exp().sum(dim=1)).clamp(min=1e-30)
    tail = torch.where(p_rest > 0, p_rest * (p_rest.clamp(min=1e-30).log() - q_rest.log()), 0.0)
    return (head + tail).clamp(min=0.0)


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
        topk: int = 128,
    ) -> None:
        self.model = model
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.max_length = max_length
        self.topk = topk
        self.device = next(model.parameters()).device
        self.max_batch_tokens = max_batch_tokens or MAX_BATCH_TOKENS.get(
            self.device.type, MAX_BATCH_TOKENS_ACCELERATOR
        )
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

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
        references: list[TopK | None] | None = None,
        keep_topk: bool = False,
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
                keep_topk,
            )
            if next_token:
                after = self._logits(hidden[[row for row, _ in owners], -1]).argmax(dim=-1)
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
        out = self.model.base_model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=False,
        )
        return out.last_hidden_state[:, -keep:]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.get_output_embeddings()(hidden)  # looked up: a method may swap it
        if self.softcap:  # e.g. Gemma 2: the causal-LM head caps its logits
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _score_positions(self, hiddens: list[torch.Tensor], conts: list[list[int]], refs: list,
                         keep_topk: bool) -> list[Scored]:  # fmt: skip
        """Score a batch's continuations from their final hidden states: every scored
        position goes through the head together, ``CHUNK`` positions at a time (one
        1k-token window's full log-softmax alone would take 400 MB)."""
        hidden = torch.cat(hiddens)
        targets = torch.tensor([t for cont in conts for t in cont])
        bounds = torch.tensor([0, *(len(c) for c in conts)]).cumsum(0).tolist()
        with_ref = [n for n, ref in enumerate(refs) if ref is not None]
        has_ref = torch.zeros(len(targets), dtype=torch.bool)
        for n in with_ref:
            has_ref[bounds[n] : bounds[n + 1]] = True
        ref_all = TopK(idx=torch.cat([refs[n].idx for n in with_ref]),
                       logp=torch.cat([refs[n].logp for n in with_ref])) if with_ref else None  # fmt: skip
        ref_row = has_ref.long().cumsum(0) - 1  # position -> row of ref_all
        lp, argmax, vals, idx = [], [], [], []
        kld = torch.zeros(len(targets), dtype=torch.float64)
        for start in range(0, len(targets), CHUNK):
            stop = min(start + CHUNK, len(targets))
            logp = F.log_softmax(self._logits(hidden[start:stop]).float(), dim=-1).cpu()
            lp.append(logp.gather(1, targets[start:stop, None])[:, 0].double())
            argmax.append(logp.argmax(dim=-1))
            if keep_topk:
                v, i = logp.topk(min(self.topk, logp.shape[1]), dim=-1)
                vals.append(v)
                idx.append(i.to(torch.int32))
            local = has_ref[start:stop]
            if local.any():
                at = ref_row[start:stop][local]
                kld[start:stop][local] = kl_from_topk(
                    logp[local], TopK(ref_all.idx[at], ref_all.logp[at])
                )
        lp, argmax = torch.cat(lp), torch.cat(argmax)
        vals, idx = (torch.cat(vals), torch.cat(idx)) if keep_topk else (None, None)
        out = []
        for n, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            scored = Scored(token_logprobs=lp[a:b], greedy=bool((argmax[a:b] == targets[a:b]).all()),
                            argmax=argmax[a:b])  # fmt: skip
            if keep_topk:
                scored.topk = TopK(idx=idx[a:b], logp=vals[a:b])
            if refs[n] is not None:
                scored.kld = kld[a:b]
                scored.top1 = argmax[a:b] == refs[n].idx[:, 0].long()
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
        outputs: list[list[int] | None] = [None] * len(prompts)
        for batch in self._batches([len(p) for p in prompts]):
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]) :] = 1
            generated = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=config,
                tokenizer=tokenizer,
            )
            for row, i in enumerate(batch):
                outputs[i] = generated[row, width:].tolist()
            if on_batch is not None:
                on_batch(len(batch))
        return outputs  # type: ignore[return-value]
