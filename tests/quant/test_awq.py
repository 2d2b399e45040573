"""AWQ against plain reimplementations of its two rules (the scale search and the clip
search) on small layers, its grouping of layers by shared input on a real decoder block,
and an end-to-end run on a tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import InputError
from harness.quant import make_config, quantize_
from harness.quant.awq import AWQConfig, InputGroup, input_groups, search_clip, search_scales
from harness.quant.rtn import fake_quantize
from tests.conftest import held_out_error


def layer_with_outlier_inputs(rows=32, cols=64, n=256, seed=0):
    """A layer whose inputs have a few channels 20x larger than the rest, as LLM
    activations do: the case AWQ is for."""
    torch.manual_seed(seed)
    layer = nn.Linear(cols, rows, bias=False)
    x = torch.randn(n, cols)
    x[:, :3] *= 20
    return layer, x


def one_layer_group(layer, x) -> InputGroup:
    with torch.no_grad():
        return InputGroup([layer], layer, [x], [((x,), {}, layer(x))])


def plain_scale_search(weight, x, bits, group_size, grid):
    """The paper's rule written out: s = mean|x|^α normalised by sqrt(max·min), weights
    Q(W·s)/s, the α with the least squared output error."""
    best = None
    for k in range(grid):
        s = x.abs().mean(0) ** (k / grid)
        s = s.clamp(min=1e-4)
        s = s / torch.sqrt(s.max() * s.min())
        w = fake_quantize(weight * s, bits, group_size) / s
        err = float(((x @ weight.T) - (x @ w.T)).pow(2).sum())
        if best is None or err < best[0]:
            best = (err, k, s)
    return best


@pytest.mark.parametrize("bits", [4, 3])
def test_scale_search_follows_the_papers_rule(bits):
    layer, x = layer_with_outlier_inputs()
    config = AWQConfig(bits=bits, group_size=32, grid_size=20)
    weight = layer.weight.detach().clone()
    with torch.no_grad():
        scales, losses = search_scales(one_layer_group(layer, x), config)
    err, k, expected = plain_scale_search(weight, x, bits, 32, 20)
    assert torch.equal(layer.weight, weight)  # the search leaves the layer as it was
    assert min(losses) == pytest.approx(err, rel=1e-4)
    assert losses.index(min(losses)) == k
    assert torch.allclose(scales, expected)


def test_scales_beat_round_to_nearest_where_activations_have_outliers():
    layer, x = layer_with_outlier_inputs()
    with torch.no_grad():
        _, losses = search_scales(one_layer_group(layer, x), AWQConfig(bits=3, group_size=32))
        rtn = float((x @ layer.weight.T - x @ fake_quantize(layer.weight, 3, 32).T).pow(2).sum())
    assert losses[0] == pytest.approx(rtn, rel=1e-5)  # alpha = 0 is plain RTN
    assert min(losses) < 0.8 * rtn


def test_clip_search_picks_each_groups_best_range():
    """Against a brute force over the same ranges, row by row and group by group."""
    layer, x = layer_with_outlier_inputs(rows=8, cols=64)
    w = layer.weight.detach()
    config = AWQConfig(bits=3, group_size=32, clip_grid=10, max_shrink=0.5)
    clipped = search_clip(w, x, config)
    for row in range(w.shape[0]):
        for start in (0, 32):
            part, xs = w[row, start : start + 32], x[:, start : start + 32]
            top = part.abs().max()
            errors = []
            for step in range(5):
                m = top * (1 - step / 10)
                q = fake_quantize(part.clamp(-m, m)[None], 3, None)[0]
                errors.append((float((xs @ q - xs @ part).pow(2).mean()), step))
            best_step = min(errors)[1]
            m = top * (1 - best_step / 10)
            assert torch.allclose(clipped[row, start : start + 32], part.clamp(-m, m))


def test_layers_are_grouped_by_shared_input_and_inspected_through_their_holder(
    tiny_model, tokenizer
):
    from harness.quant.blocks import block_inputs, first_output

    block = tiny_model.model.layers[0]
    tokens = torch.randint(3, len(tokenizer), (2, 16))
    batches = block_inputs(tiny_model, block, tokens, batch_size=2)
    linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        groups, outputs = input_groups(block, linears, batches)
    names = {id(m): n for n, m in block.named_modules()}
    found = [([names[id(m)] for m in g.layers], names[id(g.inspect)]) for g in groups]
    assert found == [(["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], "self_attn"),
                     (["self_attn.o_proj"], "self_attn.o_proj"),
                     (["mlp.gate_proj", "mlp.up_proj"], "mlp"),
                     (["mlp.down_proj"], "mlp.down_proj")]  # fmt: skip
    assert all(len(g.inputs) == len(g.calls) == 1 for g in groups)
    args, kwargs = batches[0]
    with torch.no_grad():
        assert torch.equal(outputs[0], first_output(block(*args, **kwargs)))


@pytest.mark.parametrize("duo_scaling", [False, True])
def test_awq_beats_rtn_on_a_tiny_decoder(tiny_model, duo_scaling):
    """The held-out logits of the whole decoder move less than under RTN at 3 bits, with
    the paper's scales and with AutoAWQ's (weight-normalised) ones."""
    awq, report = held_out_error(tiny_model, "awq", duo_scaling=duo_scaling)
    rtn, rtn_report = held_out_error(tiny_model, "rtn")
    assert awq < 0.9 * rtn, (awq, rtn)
    assert report.n_layers == rtn_report.n_layers == 2 * 7 and report.simulated
    assert report.effective_bits == rtn_report.effective_bits == 3 + 32 / 32


def test_awq_needs_calibration_and_valid_options(tiny_model):
    with pytest.raises(InputError, match="calibration"):
        quantize_(tiny_model, AWQConfig(bits=4))
    for options, message in [({"bits": 1}, "supports bits"), ({"max_shrink": 1.0}, "max_shrink"),
                             ({"grid_size": 0}, "positive"), ({"group_size": 0}, "group_size")]:  # fmt: skip
        with pytest.raises(InputError, match=message):
            make_config("awq", **options)
    assert make_config("awq", bits=3, group_size=64).variant_name == "awq-w3g64"
