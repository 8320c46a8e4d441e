"""rnnexp-gradcheck passes for every cell on both backends and for the reference, and fails loudly
(exit status 1, FAILED in the output) when one analytical gradient is wrong."""

from __future__ import annotations

import subprocess

import pytest

from rnnexp.gradcheck import main


@pytest.mark.parametrize("backend", ["native", "explicit"])
def test_every_cell_passes(backend, capsys):
    assert main(["--backend", backend, "--cell", "rnn,irnn,lstm,gru"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "passed" in out
    for cell in ("rnn", "irnn", "lstm", "gru"):
        assert f"{cell} {backend}" in out


def test_deep_bidirectional_final_target_passes(capsys):
    argv = ["--backend", "native,explicit", "--cell", "lstm,gru", "--bidirectional", "--num-layers", "2",
            "--targets", "final", "--loss", "mse", "--seq-len", "3", "--hidden-size", "3", "--input-size", "2"]
    assert main(argv) == 0
    assert "weight_hh_l1_reverse" in capsys.readouterr().out


def test_reference_passes_for_every_activation(capsys):
    assert main(["--backend", "reference", "--seq-len", "5", "--num-layers", "2"]) == 0
    out = capsys.readouterr().out
    for activation in ("tanh", "relu", "sigmoid", "identity"):
        assert f"reference {activation}" in out


@pytest.mark.parametrize("backend", ["reference", "explicit"])
def test_a_wrong_gradient_fails_loudly(backend, capsys):
    assert main(["--backend", backend, "--cell", "lstm", "--activation", "relu", "--inject-error"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "1.00e-02" in out  # the 1% error shows as the relative error


def test_verbose_prints_the_seeds_expected_minus_actual_lines(capsys):
    assert main(["--backend", "reference", "--activation", "tanh", "--hidden-size", "2", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "W_l0(1,0): " in out and " - " in out.split("W_l0(1,0): ")[1].splitlines()[0]


def test_console_script_exit_status(venv_bin):
    script = str(venv_bin / "rnnexp-gradcheck")
    ok = subprocess.run([script, "--backend", "reference", "--activation", "sigmoid"],
                        check=False, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run([script, "--backend", "reference", "--activation", "sigmoid", "--inject-error"],
                         check=False, capture_output=True, text=True)
    assert bad.returncode == 1 and "FAILED" in bad.stdout


def test_unknown_cell_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--cell", "transformer"])
    assert exit_info.value.code == 2
    assert "allowed values are gru, irnn, lstm, rnn" in capsys.readouterr().err
