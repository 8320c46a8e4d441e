"""What the head reads from the encoder: final states vs the last output."""

import pytest
import torch

from rnnexp.nn.recurrent import CellSpec, RecurrentEncoder, readout

SPECS = {"rnn": CellSpec("elman", "tanh"), "lstm": CellSpec("lstm", forget_bias=1.0), "gru": CellSpec("gru")}


@pytest.mark.parametrize("cell", list(SPECS))
@pytest.mark.parametrize("num_layers", [1, 2])
def test_final_state_equals_last_output_for_a_unidirectional_encoder(cell, num_layers):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(SPECS[cell], input_size=5, hidden_size=8, num_layers=num_layers)
    outputs, state = encoder(torch.randn(3, 7, 5))
    final = readout(outputs, state, "final_state", num_layers, bidirectional=False)
    last = readout(outputs, state, "last_output", num_layers, bidirectional=False)
    torch.testing.assert_close(final, last)


@pytest.mark.parametrize("cell", list(SPECS))
@pytest.mark.parametrize("num_layers", [1, 2])
def test_bidirectional_final_state_reads_backward_direction_after_step_one(cell, num_layers):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(SPECS[cell], input_size=5, hidden_size=8, num_layers=num_layers, bidirectional=True)
    outputs, state = encoder(torch.randn(3, 7, 5))
    final = readout(outputs, state, "final_state", num_layers, bidirectional=True)
    last = readout(outputs, state, "last_output", num_layers, bidirectional=True)
    assert final.shape == last.shape == (3, 16)
    # forward halves agree (both are the forward direction after step T) ...
    torch.testing.assert_close(final[:, :8], last[:, :8])
    # ... the backward half of final_state is its output at step 1, which last_output never sees
    torch.testing.assert_close(final[:, 8:], outputs[:, 0, 8:])
    assert not torch.allclose(final[:, 8:], last[:, 8:])


def test_lstm_forget_bias_starts_at_configured_value():
    encoder = RecurrentEncoder(CellSpec("lstm", forget_bias=1.0), input_size=4, hidden_size=6, num_layers=2)
    rnn = encoder.core.rnn
    for layer in range(2):
        b = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
        torch.testing.assert_close(b[6:12], torch.ones(6))


def test_irnn_starts_with_identity_recurrence_and_zero_bias():
    encoder = RecurrentEncoder(CellSpec("elman", "relu", recurrent_init="identity"), input_size=4, hidden_size=6)
    rnn = encoder.core.rnn
    torch.testing.assert_close(rnn.weight_hh_l0, torch.eye(6))
    assert torch.count_nonzero(rnn.bias_ih_l0) == 0 and torch.count_nonzero(rnn.bias_hh_l0) == 0
    assert rnn.nonlinearity == "relu"
