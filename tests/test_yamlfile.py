"""Hostile and malformed input files: every one is a clear InputError, in bounded time
and memory — never a traceback. Explicit cases, then hypothesis-generated documents for
the suite loader and the variants file."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.data.suites import load_items, load_suite
from harness.engine.kinds import kind_of
from harness.engine.tasks import prepare
from harness.errors import InputError
from harness.quant.variants import load_variants
from harness.yamlfile import read_yaml
from tests.conftest import make_tokenizer, write_jsonl

ALIAS_BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
name: bomb
tasks: [*i]
"""


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "a suite must be a mapping"),
        (b"\xff\xfe name: x", "not UTF-8 text (byte 0)"),
        (b"name: [unclosed\n", "not valid YAML"),
        (b"name: x\ntasks: " + b"[" * 5000 + b"]" * 5000, "nested"),
        (ALIAS_BOMB.encode(), "once its aliases are expanded (an alias bomb?)"),
        (b"name: x\ntasks: [{name: t, kind: perplexity, data: d.jsonl, window: 1e400}]", "'window' must be"),
        (b"name: x\ntasks: [{name: t, kind: perplexity, data: d.jsonl, window: " + b"9" * 5000 + b"}]",
         "not valid YAML .Exceeds the limit"),
        (b"name: x\ntasks: [{name: t, kind: generate, data: d.jsonl, prompt: '{a'}]", "is not valid"),
        (b"name: x\ntasks: [{name: t, kind: generate, data: d.jsonl, prompt: {a: 1}}]", "'prompt' must be a string"),
        (b"name: x\ntasks: [{name: t, kind: generate, data: d.jsonl, answer_regex: '('}]", "not a valid regular"),
        (b"name: x\ntasks: [{name: t, kind: perplexity, data: d.jsonl, window: 0}]", "at least 1"),
        (b"name: x\ntasks: [{name: t, kind: perplexity, data: d.jsonl, window: 8, stride: 9}]", "must not exceed"),
        (b"name: x\ntasks: [{name: t, kind: generate, data: d.jsonl, prompt: '{a:d}'}]", "cannot render"),
        (b"name: x\nversion: 2001-02-30\ntasks: []", "not valid YAML"),
    ],
)  # fmt: skip
def test_each_bad_suite_file_is_one_clear_error(tmp_path, content, message):
    write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "t", "a": "x", "answer": "y"}])
    path = tmp_path / "suite.yaml"
    path.write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(
        InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        load_suite(path)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "line,message",
    [
        (b"\xc3\x28\n", "d.jsonl:1: not UTF-8 text"),
        (b'{"id": 1, "text": ' + b"9" * 5000 + b"}\n", "d.jsonl:1: not usable JSON"),
        (b"[" * 100000 + b"]" * 100000 + b"\n", "d.jsonl:1: not usable JSON"),
    ],
)
def test_each_bad_item_file_is_one_clear_error(tmp_path, line, message):
    (tmp_path / "d.jsonl").write_bytes(line)
    (tmp_path / "suite.yaml").write_text(
        "name: x\ntasks: [{name: t, kind: perplexity, data: d.jsonl}]\n"
    )
    with pytest.raises(InputError, match=message):
        load_suite(tmp_path / "suite.yaml")


def test_read_yaml_keeps_plain_anchors_and_aliases(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("base: &b {window: 64}\nuse: *b\n")
    assert read_yaml(path, "suite") == {"base": {"window": 64}, "use": {"window": 64}}


# -- generated documents ----------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["{context}", "{a", "{0}", "{x.y}", "{answer!z}", "(", "", "📚", "\x00"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
TASK_KEYS = ["name", "kind", "data", "slices", "prompt", "target", "target_delimiter", "choices_field",
             "answer_field", "text_field", "fewshot", "fewshot_delimiter", "stop", "max_new_tokens",
             "answer_regex", "window", "stride", "fewshot_data", "metric", "limit", "lm_eval", "bogus"]  # fmt: skip
VALID_TASKS = [
    {"name": "text", "kind": "perplexity", "data": "text.jsonl", "window": 16},
    {"name": "mc", "kind": "multiple_choice", "data": "mc.jsonl", "prompt": "{context}"},
    {"name": "gen", "kind": "generate", "data": "gen.jsonl", "prompt": "{a} + {b} =", "fewshot": 1},
]


@st.composite
def suite_documents(draw) -> bytes:
    """A valid suite with some keys replaced, removed or added; or raw text / bytes."""
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(st.binary(max_size=200))
    if shape == 1:
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    tasks = [dict(t) for t in draw(st.lists(st.sampled_from(VALID_TASKS), min_size=1, max_size=3))]
    for task in tasks:
        for _ in range(draw(st.integers(0, 3))):
            key = draw(st.sampled_from(TASK_KEYS))
            if draw(st.booleans()):
                task[key] = draw(VALUES)
            else:
                task.pop(key, None)
    doc = {"name": draw(VALUES) if shape == 2 else "fuzz", "version": draw(SCALARS), "tasks": tasks}
    if draw(st.integers(0, 3)) == 0:
        doc["gate"] = draw(VALUES)
    if shape == 3:
        doc[draw(st.text(max_size=6))] = draw(VALUES)
    if shape == 4:
        doc["tasks"] = draw(VALUES)
    dump = json.dumps if draw(st.booleans()) else (lambda d: yaml.safe_dump(d, allow_unicode=True))
    try:
        return dump(doc).encode("utf-8", "surrogatepass")
    except ValueError:  # JSON cannot hold NaN strictly; YAML can
        return yaml.safe_dump(doc).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def suite_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    write_jsonl(root / "text.jsonl", [{"id": "t", "text": "Some plain text to score."}])
    write_jsonl(
        root / "mc.jsonl", [{"id": "m", "context": "2 + 2 =", "choices": ["4", "5"], "answer": 0}]
    )
    write_jsonl(
        root / "gen.jsonl",
        [{"id": f"g{i}", "a": i, "b": 1, "answer": str(i + 1)} for i in range(3)],
    )
    return root


FUZZ = settings(max_examples=1000, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


# found by this test: JSON surrogate escapes, which YAML keeps as lone halves
SURROGATES = [
    b'{"name": "f", "tasks": [{"name": "\\ud800\\udc00", "kind": "generate", "data": "gen.jsonl", '
    b'"prompt": "{a} + {b} =", "fewshot": 1}]}',
    b'{"name": "f", "tasks": [{"name": "mc", "kind": "multiple_choice", "data": "mc.jsonl", "prompt": "\\ud800"}]}',
    b'{"name": "f", "tasks": [{"name": "text", "kind": "perplexity", "data": "\\ud800\\udc00", "window": 16}]}',
]


@FUZZ
@given(document=suite_documents())
@example(document=SURROGATES[0])
@example(document=SURROGATES[1])
@example(document=SURROGATES[2])
def test_generated_suites_load_or_fail_clearly_and_what_loads_renders(suite_folder, document):
    path = suite_folder / "suite.yaml"
    path.write_bytes(document)
    try:
        suite = load_suite(path)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc).strip()[:0]
        return
    tokenizer = _tokenizer()
    for task in suite.tasks:  # what loads must also render and tokenize
        if kind_of(task).itemized:
            items = load_items(task)
            prepare(task, items, tokenizer, 0, items, 0)


_TOKENIZER = []


def _tokenizer():
    if not _TOKENIZER:
        _TOKENIZER.append(make_tokenizer())
    return _TOKENIZER[0]


VARIANT_KEYS = [
    "method",
    "bits",
    "group_size",
    "symmetric",
    "model",
    "name",
    "gguf_file",
    "damp",
    "bogus",
]


@st.composite
def variant_documents(draw) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=120))
    entries = []
    for _ in range(draw(st.integers(0, 3))):
        entry = {
            "method": draw(
                st.sampled_from(["rtn", "gptq", "hqq", "gguf", "bnb", "torchao", "nope"])
            )
        }
        for _ in range(draw(st.integers(0, 3))):
            entry[draw(st.sampled_from(VARIANT_KEYS))] = draw(VALUES)
        entries.append(entry)
    doc = draw(VALUES) if draw(st.integers(0, 6)) == 0 else entries
    return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")


@FUZZ
@given(document=variant_documents())
def test_generated_variant_files_load_or_fail_clearly(tmp_path_factory, document):
    path = tmp_path_factory.getbasetemp() / "variants.yaml"
    path.write_bytes(document)
    try:
        variants = load_variants(path)
    except InputError as exc:
        assert str(exc)
        return
    assert variants and all(v.name for v in variants)


def test_surrogate_escape_pairs_are_joined_and_a_lone_half_is_refused(tmp_path):
    """JSON writes a character outside the BMP as two escaped halves; YAML keeps them
    apart, and a lone half is text no file or tokenizer can take."""
    path = tmp_path / "s.yaml"
    path.write_text('{"name": "\\ud83d\\ude00 x", "k": ["\\uD800\\uDC00"]}', encoding="utf-8")
    assert read_yaml(path, "suite") == {"name": "\U0001f600 x", "k": ["\U00010000"]}
    path.write_text('{"name": "a"}\n'.replace('"a"', '"\\ud800 alone"'), encoding="utf-8")
    with pytest.raises(InputError, match="s.yaml:1: not valid Unicode text"):
        read_yaml(path, "suite")
