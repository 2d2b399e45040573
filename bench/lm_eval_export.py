"""Export a qharness suite as lm-eval task YAML files, so lm-eval can run the same items
(the peer in bench/sweep.py). Each task gets its own truncated JSONL copy (lm-eval's
``limit`` is one number for every task) and a YAML of the matching output type:

| qharness kind / metric | lm-eval output type | metric |
|---|---|---|
| perplexity | loglikelihood_rolling | word_perplexity |
| multiple_choice | multiple_choice | acc |
| generate, exact_match | generate_until | exact_match |
| generate, greedy_match | loglikelihood | acc (is the gold continuation greedy) |

Prompts are the suite's templates turned into Jinja; few-shot examples are drawn by
lm-eval from the same file. Good enough for equal work, not for equal numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from harness.data.suites import load_items
from harness.engine.kinds import kind_of
from harness.records import Suite


def _jinja(template: str) -> str:
    return re.sub(r"\{(\w+)\}", r"{{\1}}", template)


def export_suite(suite: Suite, folder: Path, limits: dict[str, int | None]) -> list[str]:
    """Write one YAML + JSONL per native task of ``suite`` into ``folder``; returns the
    lm-eval task names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for task in suite.tasks:
        if not kind_of(task).itemized:
            continue
        items = load_items(task)[: limits.get(task.name)]
        data = folder / f"{task.name}.jsonl"
        data.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
        name = f"qh_{task.name}"
        config = {
            "task": name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test",
            "fewshot_split": "test",
            "num_fewshot": task.fewshot,
            "fewshot_delimiter": task.fewshot_delimiter,
            "target_delimiter": task.target_delimiter,
        }
        if task.kind == "perplexity":
            config |= {"output_type": "loglikelihood_rolling", "doc_to_text": "",
                       "doc_to_target": "{{" + task.text_field + "}}",
                       "metric_list": [{"metric": "word_perplexity"}]}  # fmt: skip
        elif task.kind == "multiple_choice":
            config |= {"output_type": "multiple_choice", "doc_to_text": _jinja(task.prompt),
                       "doc_to_choice": "{{" + task.choices_field + "}}",
                       "doc_to_target": "{{" + task.answer_field + "}}",
                       "metric_list": [{"metric": "acc"}]}  # fmt: skip
        elif task.metric == "greedy_match":
            config |= {"output_type": "loglikelihood", "doc_to_text": _jinja(task.prompt),
                       "doc_to_target": _jinja(task.target), "metric_list": [{"metric": "acc"}]}  # fmt: skip
        else:
            config |= {"output_type": "generate_until", "doc_to_text": _jinja(task.prompt),
                       "doc_to_target": _jinja(task.target),
                       "generation_kwargs": {"until": list(task.stop), "max_gen_toks": task.max_new_tokens,
                                             "do_sample": False},
                       "metric_list": [{"metric": "exact_match"}]}  # fmt: skip
        (folder / f"{name}.yaml").write_text(
            yaml.safe_dump(config, sort_keys=False), encoding="utf-8"
        )
        names.append(name)
    return names
