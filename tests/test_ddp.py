"""examples/ddp_training.py: fastrnn.torch.RNN under DistributedDataParallel (gloo, CPU), run
as a user runs it, with two processes on this machine.

What must hold: DDP keeps the two replicas identical; fastrnn.torch.RNN's run gives the same
losses and final parameters as torch.nn.RNN's run under DDP; and both equal ONE process that
trains on the whole batch (the test's own loop, no DDP: gradient averaging over two halves
of a batch is the gradient of the whole batch's mean loss). torchrun starts it the same way.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("this torch build has no torch.distributed", allow_module_level=True)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STEPS, BATCH, LR, SEED = 30, 32, 0.05, 0
ATOL = 2e-5          # float32 after 30 steps; measured gaps are ~1e-7
TIMEOUT_S = 180


def run_example(command, save_dir):
    result = subprocess.run([*command, str(EXAMPLES / "ddp_training.py"), "--save", str(save_dir),
                             "--steps", str(STEPS), "--batch-size", str(BATCH), "--lr", str(LR),
                             "--seed", str(SEED)],
                            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=EXAMPLES.parent)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    return result.stdout, [dict(np.load(save_dir / f"rank{r}.npz")) for r in range(2)]


@pytest.fixture(scope="module")
def spawned_run(tmp_path_factory):
    return run_example([sys.executable], tmp_path_factory.mktemp("ddp"))


def example_module():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import ddp_training
    finally:
        sys.path.remove(str(EXAMPLES))
    return ddp_training


def single_process_whole_batch():
    """torch.nn.RNN's regressor trained in this process on whole batches: what DDP must equal."""
    example = example_module()
    inputs, targets = example.make_data(SEED, STEPS, BATCH)
    _, model = example.initial_models(SEED)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    losses = []
    for x, y in zip(inputs, targets):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses), {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_replicas_stay_identical(spawned_run):
    _, (rank0, rank1) = spawned_run
    assert rank0.keys() == rank1.keys()
    assert any(k.startswith("fastrnn.rnn.weight_hh_l1") for k in rank0)
    for key in rank0:
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)


def test_fastrnn_matches_torch_rnn_under_ddp(spawned_run):
    stdout, (rank0, _) = spawned_run
    np.testing.assert_allclose(rank0["losses"], rank0["reference_losses"], rtol=1e-5)
    assert rank0["losses"][-1] < 0.85 * rank0["losses"][0]          # it trains: 0.33 -> 0.25
    names = [k[len("torch."):] for k in rank0 if k.startswith("torch.")]
    assert len(names) == 4 * 2 + 2                                  # 2 RNN layers + Linear
    for name in names:
        np.testing.assert_allclose(rank0[f"fastrnn.{name}"], rank0[f"torch.{name}"],
                                   atol=ATOL, err_msg=name)
    assert "2 processes (gloo), 30 steps" in stdout


def test_ddp_equals_one_process_on_the_whole_batch(spawned_run):
    _, (rank0, _) = spawned_run
    losses, parameters = single_process_whole_batch()
    np.testing.assert_allclose(rank0["losses"], losses, rtol=1e-5)
    for name, value in parameters.items():
        np.testing.assert_allclose(rank0[f"fastrnn.{name}"], value, atol=ATOL, err_msg=name)


def test_torchrun_start_gives_the_same_run(spawned_run, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run"]      # what `torchrun` runs
    _, (rank0, _) = run_example([*torchrun, "--standalone", "--nproc-per-node=2"], tmp_path)
    _, (spawned0, _) = spawned_run
    for key in spawned0:
        np.testing.assert_array_equal(rank0[key], spawned0[key], err_msg=key)
