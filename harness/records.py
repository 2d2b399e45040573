"""Every record passed between stages. Plain frozen dataclasses, no logic.

Read this module first: the pipeline is ``RunSpec -> Variant -> ItemResult -> summary``.
Quantization configs live with their methods (``harness.quant``); they all derive
from :class:`QuantConfig` here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class ModelSpec:
    """Where the base model comes from: ``default``, a Hub id, a local folder or a .gguf file."""

    source: str = "default"
    revision: str | None = None
    dtype: str = "float32"
    trust_remote_code: bool = False
    device: str = "cpu"  # "cpu", "cuda", "cuda:N", or "auto" (CUDA when available)


@dataclass(frozen=True)
class QuantConfig:
    """Base of every method's config. Subclasses validate themselves in ``__post_init__``.

    ``supported_bits`` lists the bit widths a method accepts; ``needs_calibration`` marks
    methods that read activations of calibration text.
    """

    method: str = field(init=False, default="")
    bits: int = 8
    supported_bits: ClassVar[tuple[int, ...]] = ()
    needs_calibration: ClassVar[bool] = False


@dataclass(frozen=True)
class CalibrationSpec:
    """Calibration text for calibration-based methods: ``n_samples`` windows of
    ``seq_len`` tokens drawn (seeded) from the JSONL ``source`` (a ``text`` field per line)."""

    source: Path
    n_samples: int = 32
    seq_len: int = 256
    seed: int = 0


@dataclass(frozen=True)
class Artifact:
    """A pre-quantized file of the base model, as shipped: a ``.gguf`` file (or a folder
    and its ``gguf_file``)."""

    source: str
    gguf_file: str | None = None


@dataclass(frozen=True)
class Variant:
    """One model to evaluate: the baseline (no ``config``, no ``artifact``), the base
    model quantized by a method (``config``), or a pre-quantized ``artifact``; any of
    them with its KV cache quantized to ``kv_bits``."""

    name: str
    config: QuantConfig | None = None
    artifact: Artifact | None = None
    kv_bits: int | None = None

    @property
    def is_baseline(self) -> bool:
        return self.config is None and self.artifact is None and self.kv_bits is None


@dataclass(frozen=True)
class QuantReport:
    """Honest size accounting of one quantized variant."""

    method: str
    bits: int
    n_layers: int
    n_weights: int
    packed_bytes: int  # bytes of the quantized layers' codes + scales + zeros
    effective_bits: float  # (codes + scales + zeros) bits / weight
    model_bytes: int  # packed quantized layers + everything else at 16 bits
    simulated: bool  # True: evaluated as quantize->dequantize float weights
    seconds: float
    note: str = ""  # how the size was counted, layers a method left alone, and the like


@dataclass(frozen=True)
class Task:
    """One evaluation task of a suite. ``data`` is an absolute JSONL path, ``None`` for a
    kind that loads its own documents from ``source`` (see :mod:`harness.engine.kinds`)."""

    name: str
    kind: str
    data: Path | None
    slices: tuple[str, ...] = ()
    prompt: str = "{context}"  # str.format template over item fields
    target: str = "{answer}"  # gold continuation template (generate)
    target_delimiter: str = " "
    choices_field: str = "choices"  # multiple_choice: list of continuations
    answer_field: str = "answer"  # multiple_choice: index of the gold choice
    text_field: str = "text"  # perplexity
    fewshot: int = 0
    fewshot_delimiter: str = "\n\n"
    stop: tuple[str, ...] = ("\n",)
    max_new_tokens: int = 16
    answer_regex: str | None = None
    window: int = 1024  # perplexity: tokens per rolling window
    stride: int = 0  # perplexity: new tokens per window after the first (0: window // 2)
    fewshot_data: Path | None = None  # pool of few-shot examples (default: the other items)
    metric: str = ""  # filled from the kind when empty
    limit: int = 0  # evaluate only the first N items (0: all); --limit caps it further
    source: str = ""  # a kind's own task definition (a registered name, or a file's absolute path)
    answer_filter: str = ""  # the kind's filter whose answers are kept (default: its first)

    @property
    def decodes(self) -> bool:
        """Whether the items need greedy decoding (``greedy_match`` reads its answer off
        the gold continuation's scores instead)."""
        return self.kind == "generate" and self.metric != "greedy_match"


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    tasks: tuple[Task, ...]
    path: Path | None = None
    gate: dict | None = None  # the raw ``gate:`` block (validated by harness.analysis.policy)


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs; recorded in the manifest."""

    model: ModelSpec
    suite_path: Path
    out: Path
    variants: tuple[Variant, ...]
    limit: int | None = None
    seed: int = 0
    threads: int = 1
    batch_size: int = 8
    calibration: CalibrationSpec | None = None
    skipped: tuple[str, ...] = ()  # (method, bits) pairs left out as unsupported, for the report
    adaptive: bool = False  # stop a variant's task once the gate's failure is settled
    policy: Path | None = None  # gate policy file (default: the suite's gate block)
    memory_check: bool = True  # refuse before loading when the estimate exceeds free memory
    ray: str | None = None  # fan variants out on Ray: "local", or a cluster's address


@dataclass(frozen=True)
class ItemResult:
    """One item scored by one variant. Missing values are ``None``.

    ``nll`` and ``n_tokens`` cover the scored tokens (the text for perplexity, the
    gold continuation otherwise); ``kld`` and ``top1_agree`` compare the variant's
    next-token distributions to the baseline's on those same tokens (their means;
    ``kld_tokens`` and ``dp_tokens`` keep every token, for percentiles).
    """

    variant: str
    task: str
    item_id: str
    slices: tuple[str, ...]
    correct: bool | None
    correct_norm: bool | None
    score: float  # the task metric for this item (1/0 accuracy, or nll per token)
    nll: float
    gold_logprob: float
    n_tokens: int
    kld: float | None
    top1_agree: float | None
    margin: float | None  # gold log-prob minus the best wrong choice (multiple_choice)
    prediction: str
    target: str
    kld_tokens: tuple[float, ...] | None = None  # KL divergence at each scored token
    dp_tokens: tuple[float, ...] | None = None  # p_variant(gold) - p_baseline(gold) per token
    nonfinite: int = 0  # positions whose logits held NaN/Inf: the item then counts as wrong, worst


@dataclass
class Reference:
    """The baseline at the scored positions of one item: its final hidden states, and its
    greedy tokens (from its own full-precision logits, so near-ties cannot flip top-1), and
    where the scored tokens are the baseline's own (a generated answer) those tokens."""

    hidden: Tensor  # [n, hidden_size], float16 (or float32 where float16 overflows)
    argmax: Tensor  # [n] int32
    tokens: Tensor | None = (
        None  # [n] int32: the scored tokens, where a variant must score the same
    )


@dataclass(frozen=True)
class Comparison:
    """One variant against the baseline on one task x slice, paired item by item.

    ``loss`` is the quality lost, as a fraction: the relative accuracy drop
    ``(base - value) / base``, or for perplexity ``value / base - 1``. Intervals are
    paired intervals at ``level`` (see :mod:`harness.analysis.stats`); the ``kld_p*`` fields are
    percentiles over every scored token of the slice.
    """

    variant: str
    task: str
    slice: str
    metric: str
    n: int
    base_value: float
    value: float
    delta: float
    delta_ci: tuple[float, float]
    loss: float
    loss_ci: tuple[float, float]
    lost: int | None  # baseline right, variant wrong (accuracy metrics)
    gained: int | None
    flip_rate: float | None  # lost / n
    flip_rate_ci: tuple[float, float] | None
    kld: float | None
    kld_ci: tuple[float, float] | None
    top1: float | None
    top1_ci: tuple[float, float] | None
    p_value: float  # McNemar exact (accuracy) or Wilcoxon signed-rank (perplexity)
    q_value: float  # Benjamini-Hochberg across every comparison of the run
    level: float
    # over every scored token of the slice, as llama.cpp's --kl-divergence reports them
    kld_p50: float | None = None
    kld_p90: float | None = None
    kld_p95: float | None = None
    kld_p99: float | None = None
    kld_p999: float | None = None
    kld_max: float | None = None
    dp_rms: float | None = None  # root mean square of the gold token's probability change


@dataclass(frozen=True)
class Finding:
    """A gate rule applied to one comparison."""

    rule: str
    severity: Literal["pass", "warn", "fail"]
    variant: str
    task: str
    slice: str
    metric: str
    observed: float
    threshold: float
    ci: tuple[float, float]
    message: str


@dataclass(frozen=True)
class VariantVerdict:
    variant: str
    passed: bool
    failures: int
    warnings: int
    effective_bits: float
    model_bytes: int | None


@dataclass(frozen=True)
class Verdict:
    """The gate's decision: each variant's verdict and the recommended variant (the most
    aggressive one that passes every rule), or ``None`` when none passes."""

    passed: bool
    target: str | None
    recommended_variant: str | None
    variants: tuple[VariantVerdict, ...]
    findings: tuple[Finding, ...]
    mode: str = "harm"  # the gate mode: "harm" (fail what is shown harmful) or "safety"
