"""Block capture for the calibration methods, against the model's own hidden states."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.errors import InputError
from harness.quant import select_linears
from harness.quant.blocks import block_inputs, decoder_blocks, next_inputs


def test_block_inputs_are_the_embeddings_and_each_block_feeds_the_next(tiny_model):
    layers = select_linears(tiny_model, ("lm_head",))
    blocks = decoder_blocks(tiny_model, layers, "test")
    assert blocks is tiny_model.model.layers
    tokens = torch.randint(3, 200, (5, 12))
    batches = block_inputs(tiny_model, blocks[0], tokens, batch_size=2)
    assert [kwargs["hidden_states"].shape[0] for _, kwargs in batches] == [2, 2, 1]
    with torch.no_grad():
        hidden = tiny_model(
            input_ids=tokens, output_hidden_states=True, use_cache=False
        ).hidden_states
        captured = torch.cat([kwargs["hidden_states"] for _, kwargs in batches])
        assert torch.allclose(captured, hidden[0])
        after = torch.cat(
            [kwargs["hidden_states"] for _, kwargs in next_inputs(blocks[0], batches)]
        )
    assert torch.allclose(after, hidden[1], atol=1e-5)


def test_a_model_without_a_block_stack_is_refused():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    with pytest.raises(InputError, match="found no stack of decoder blocks"):
        decoder_blocks(model, select_linears(model, ()), "gptq")
