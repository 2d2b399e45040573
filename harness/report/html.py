"""The HTML report: one self-contained page (plots embedded as data URIs, no scripts,
no network), readable on a laptop and printable."""

from __future__ import annotations

import base64
import json
from html import escape as _escape
from pathlib import Path

import pandas as pd

from harness.manifest import Manifest
from harness.report.markdown import base_precision_warning, fmt, percent, size, verdict_line
from harness.report.views import adaptive_note
from harness.text import visible


def escape(text: object, quote: bool = True) -> str:
    """HTML-escaped, with control characters made visible."""
    return _escape(visible(text), quote)


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a1a1a;
       max-width: 1180px; margin: 2rem auto; padding: 0 1.2rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem;
     border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .88rem; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .5rem; text-align: right; vertical-align: top; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
td.fail { color: #b23c00; font-weight: 600; } td.pass { color: #006d4f; font-weight: 600; }
.verdict { font-size: 1.1rem; padding: .6rem .9rem; border-left: 5px solid #0072B2; background: #f4f8fb; }
.warning { padding: .5rem .9rem; border-left: 5px solid #E69F00; background: #fdf6e9; }
img { max-width: 100%; height: auto; display: block; margin: .6rem 0; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .8rem; }
code, td.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: .82rem; }
td.mono { text-align: left; white-space: pre-wrap; max-width: 22rem; }
.muted { color: #555; font-size: .88rem; }
@media print { body { max-width: none; margin: 0; font-size: 11px; } h2 { break-after: avoid; }
               img, table { break-inside: avoid; } details { display: block; } }
"""


def _table(frame: pd.DataFrame, left: tuple[str, ...] = (), classes: dict | None = None) -> str:
    head = "".join(
        f'<th class="{"l" if c in left else ""}">{escape(str(c))}</th>' for c in frame.columns
    )
    body = []
    for _, row in frame.iterrows():
        cells = []
        for column in frame.columns:
            css = ("l " if column in left else "") + (classes or {}).get(column, lambda v: "")(
                row[column]
            )
            cells.append(f'<td class="{css.strip()}">{escape(str(row[column]))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _variants(table: pd.DataFrame) -> pd.DataFrame:
    has_ppl = table["ppl"].notna().any()
    frame = pd.DataFrame({
        "variant": table["variant"], "bits/weight": table["effective_bits"].map(lambda v: f"{v:.3g}"),
        "size": table["model_bytes"].map(size), "verdict": table["verdict"],
        "fail / warn": [f"{f} / {w}" for f, w in zip(table["failures"], table["warnings"], strict=True)],
        "quality kept": table["kept"].map(percent),
        **({"perplexity": table["ppl"].map(fmt)} if has_ppl else {}),
        "mean KLD": table["kld"].map(lambda v: fmt(v, 3)), "top-1 agree": table["top1"].map(lambda v: fmt(v, 3)),
    })  # fmt: skip
    return frame


def _savings(table: pd.DataFrame) -> pd.DataFrame:
    base = table.loc[table["variant"] == "baseline", "model_bytes"]
    base_bytes = float(base.iloc[0]) if len(base) and base.iloc[0] else float("nan")
    return pd.DataFrame({
        "variant": table["variant"], "bits/weight": table["effective_bits"].map(lambda v: f"{v:.3g}"),
        "size": table["model_bytes"].map(size),
        "vs 16-bit": table["model_bytes"].map(lambda b: percent(float(b) / base_bytes) if b else "–"),
        "evaluated from": ["16-bit weights" if v == "baseline" else "simulated (dequantized)" if s
                           else "packed weights" for v, s in zip(table["variant"], table["simulated"], strict=True)],
        "quantize s": table["quantize_s"].map(lambda v: fmt(v, 3)),
        "evaluation s": table["eval_s"].map(lambda v: fmt(v, 4)),
        "size accounting": table["note"].fillna(""),
    })  # fmt: skip


def _manifest(manifest: Manifest) -> str:
    libraries = ", ".join(f"{k} {v}" for k, v in manifest.libraries.items())
    settings = ", ".join(f"{k} {v}" for k, v in manifest.settings.items())
    calib = manifest.calibration
    rows = [
        ("command", " ".join(manifest.command) or "–"),
        ("harness", manifest.harness_version or "?"),
        ("libraries", libraries),
        ("settings", f"{settings}, seed {manifest.seed}"),
        ("platform", ", ".join(f"{k} {v}" for k, v in manifest.platform.items())),
        ("calibration", "none" if not calib else
         f"{calib['n_samples']} × {calib['seq_len']} tokens from {calib['source']} (sha256 {calib['sha256'][:12]}…, seed {calib['seed']})"),
        ("model load", f"{manifest.seconds('load_model') or '?'} s"),
        ("last invocation", f"{manifest.seconds('total_last_invocation') or '?'} s, peak RSS {manifest.peak_rss_mib or '?'} MiB"),
    ]  # fmt: skip
    body = "".join(
        f'<tr><th class="l">{escape(k)}</th><td class="l">{escape(str(v))}</td></tr>'
        for k, v in rows
    )
    dump = escape(json.dumps(manifest.raw, indent=1, sort_keys=True, default=str))
    return f"<table>{body}</table><details><summary>Full manifest (JSON)</summary><pre>{dump}</pre></details>"


def render_html(*, manifest: Manifest, verdict, table: pd.DataFrame, grid: pd.DataFrame, ppl_grid: pd.DataFrame,
                flips: pd.DataFrame, examples: list[dict], flags: list[str], images: dict[str, Path],
                top=(), rest: list[str] = (), power: pd.DataFrame | None = None) -> str:  # fmt: skip
    model, suite = manifest.model, manifest.suite
    title = f"qharness report: {manifest.run_name}"
    warning = base_precision_warning(manifest.base_precision)
    verdict_css = {"verdict": lambda v: {"pass": "pass", "FAIL": "fail"}.get(v, "")}
    parts = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">Model {escape(model.name)} '
        f"(weights <code>{escape(model.hash or '?')}</code>), suite <code>{escape(suite.name)}</code> "
        f"v{escape(suite.version)}. Scored in {escape(model.dtype)}; the baseline is shown at 16 bits.</p>",
        f'<p class="warning">{_inline(warning)}</p>' if warning else "",
        '<h2 id="verdict">Verdict</h2>',
        f'<p class="verdict">{_inline(verdict_line(verdict))}</p>',
        _what_broke(list(top), list(rest)),
        _table(_variants(table), left=("variant",), classes=verdict_css),
        '<p class="muted">Quality kept: 100% minus the relative accuracy drop (or perplexity increase), '
        "averaged over tasks; KLD and top-1 agreement against the baseline's next-token distributions.</p>",
    ]  # fmt: skip
    skipped = manifest.skipped_variants
    if skipped:
        parts.append(f'<p class="muted">Skipped: {escape("; ".join(skipped))}.</p>')
    adaptive = adaptive_note(manifest)
    if adaptive:
        parts.append(f'<p class="muted">{escape(adaptive)}</p>')
    parts += ['<h2 id="knee">Quality versus bits</h2>',
              '<p class="muted">Per slice: the mean over its tasks, bands the mean of their paired 95% '
              "intervals, the knee ringed. Per task below.</p>",
              _image(images["slices"], "quality kept per slice against bits"),
              _image(images["knee"], "task metric per task against bits")]  # fmt: skip
    parts += ['<h2 id="methods">Methods compared</h2>']
    if not grid.empty:
        shown = grid.map(percent).reset_index().rename(columns={"family": "method"})
        shown.columns = [str(c) for c in shown.columns]
        parts += ["<p>Quality kept, method × bits:</p>", _table(shown, left=("method",))]
    if not ppl_grid.empty:
        shown = ppl_grid.map(fmt).reset_index().rename(columns={"family": "method"})
        shown.columns = [str(c) for c in shown.columns]
        parts += ["<p>Perplexity, method × bits:</p>", _table(shown, left=("method",))]
    parts += [_image(images["pareto"], "quality against model size with the Pareto front")]
    parts += ['<h2 id="heatmap">Slices × variants</h2>', _image(images["heatmap"], "heat map of quality kept per slice and variant")]  # fmt: skip
    if flags:
        items = "".join(f"<li>{escape(f)}</li>" for f in flags)
        parts.append(
            f"<details><summary>{len(flags)} flags (fail, then warn)</summary><ul>{items}</ul></details>"
        )
    parts += _power(power)
    parts += ['<h2 id="flips">Flips</h2>']
    if not flips.empty:
        parts += [
            _image(images["flips"], "items lost and gained per variant"),
            _table(flips, left=("variant",)),
        ]
    else:
        parts.append('<p class="muted">No accuracy tasks: no flips to count.</p>')
    parts += ['<h2 id="examples">Examples that broke</h2>']
    if examples:
        frame = pd.DataFrame(examples).rename(columns={"item_id": "item", "target": "expected",
                                                       "baseline": "baseline output", "output": "variant output"})  # fmt: skip
        parts += ['<p class="muted">Items the baseline got right and a failed variant got wrong.</p>',
                  _table(frame, left=tuple(frame.columns), classes={c: lambda v: "mono" for c in
                         ("expected", "baseline output", "variant output")})]  # fmt: skip
    else:
        parts.append('<p class="muted">No variant failed a gate rule.</p>')
    parts += [
        '<h2 id="savings">Savings</h2>',
        _table(_savings(table), left=("variant", "evaluated from", "size accounting")),
    ]
    parts += ['<h2 id="manifest">Run</h2>', _manifest(manifest)]
    body = "\n".join(p for p in parts if p)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")  # fmt: skip


def _what_broke(top, rest: list[str]) -> str:
    if not top:
        return ""
    frame = pd.DataFrame([{"#": i, "": r.finding.severity.upper(), "variant": r.finding.variant,
                           "task / slice": f"{r.finding.task} / {r.finding.slice}", "rule": r.finding.rule,
                           "finding": r.finding.message + (" (slice too small to resolve it)" if r.resolves is False and r.finding.severity == "warn" else ""),
                           "examples (baseline → variant)": "; ".join(r.examples)}
                          for i, r in enumerate(top, start=1)])  # fmt: skip
    css = {"": lambda v: "fail" if v == "FAIL" else ""}
    more = "".join(f"<li>{escape(line)}</li>" for line in rest)
    return (_table(frame, left=("variant", "task / slice", "rule", "finding", "examples (baseline → variant)"), classes=css)
            + (f"<ul>{more}</ul>" if more else ""))  # fmt: skip


def _power(power: pd.DataFrame | None) -> list[str]:
    """What each slice can see: the MDE and the items needed, unresolved first."""
    if power is None or power.empty:
        return []
    shown = power.sort_values(["resolves", "task", "slice"], kind="stable")
    shown = pd.DataFrame({"task": shown["task"], "slice": shown["slice"], "rule": shown["rule"], "items": shown["n"],
                          "MDE": [fmt(v, 3) for v in shown["mde"]], "items to resolve": shown["items_needed"],
                          "resolves": ["yes" if ok else "no" for ok in shown["resolves"]],
                          "assumes": shown["basis"]})  # fmt: skip
    blind = int((~power["resolves"]).sum())
    css = {"resolves": lambda v: "fail" if v == "no" else "pass"}
    return ['<h2 id="power">What each slice can see</h2>',
            f'<p class="muted">The smallest loss each rule fails with 80% power at the gate\'s level (MDE), and the '
            f"items a slice needs to fail twice its tolerance; {blind} of {len(power)} rule × slice pairs cannot "
            "resolve their tolerance. <code>qharness plan</code> prints this before a run.</p>",
            f"<details><summary>{len(power)} rule × slice pairs</summary>"
            + _table(shown, left=("task", "slice", "rule", "assumes"), classes=css) + "</details>"]  # fmt: skip


def _inline(text: str) -> str:
    """Markdown bold (``**x**``) to <strong>, everything else escaped."""
    pieces = escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(pieces))


def write_html(path: Path, **kwargs) -> Path:
    path.write_text(render_html(**kwargs), encoding="utf-8")
    return path
