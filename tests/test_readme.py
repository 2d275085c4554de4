"""The README's examples run as written (so the first thing a newcomer tries works)."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python block"
    exec(compile(blocks[0], "README quickstart", "exec"), {})
    assert capsys.readouterr().out.strip() == "(20, 4, 64) (4, 4, 32) (32, 32)"


def test_cells_lengths_and_step_example_runs(capsys):
    """The second block: LSTM with a projection, GRU on ragged sequences, RNN.step."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    exec(compile(blocks[1], "README cells example", "exec"), {})
    assert capsys.readouterr().out.strip() == "(4, 20, 32) (1, 4, 32) True"


def test_torch_example_runs(capsys):
    """The torch section's block: compile, export, vmap and autocast agree with eager."""
    pytest.importorskip("torch")
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
                 if "fastrnn.torch" in b)
    exec(compile(block, "README torch example", "exec"), {})
    assert capsys.readouterr().out.split() == ["True", "True", "True", "torch.bfloat16"]


def test_torch_lstm_example_runs(capsys):
    """The torch section's LSTM block: torch's state_dict loads and the outputs agree."""
    pytest.importorskip("torch")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
              if "fastrnn.torch.LSTM" in b]
    exec(compile(blocks[0], "README torch LSTM example", "exec"), {})
    assert capsys.readouterr().out.split() == ["True"]
