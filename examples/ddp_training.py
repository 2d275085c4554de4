"""Data-parallel training of fastrnn.torch.RNN with torch.distributed (DDP): the way past one
process, and past one machine.

Why it needs nothing special: fastrnn.torch.RNN is a torch.nn.Module with ordinary
nn.Parameters and an autograd backward, so ``DistributedDataParallel`` wraps it as it wraps
torch.nn.RNN. Each process runs fastrnn's kernels on its shard of every batch; DDP averages the
gradients across processes (an all-reduce during backward) and every replica takes the same
optimizer step, so the replicas stay identical and the run equals one process on the whole batch.

What it does: starts ``--processes`` workers on this machine (gloo backend, CPU, a rendezvous
file), builds a small many-to-one regressor (RNN -> Linear on the last step) twice from the
SAME initial weights, once with fastrnn.torch.RNN and once with torch.nn.RNN, trains both
under DDP on the same synthetic data, and prints both loss curves and how far the two final
models are apart. ``--save DIR`` writes each worker's losses and final parameters to
``DIR/rank<N>.npz`` (tests/test_ddp.py checks them).

    python examples/ddp_training.py                     # 2 processes on this machine
    torchrun --nproc-per-node=2 examples/ddp_training.py   # the same, started by torchrun

On several machines, start it with torchrun on each (``--nnodes``, ``--node-rank``,
``--master-addr``, ``--master-port``): under torchrun the script reads its rank and the
rendezvous from the environment instead of spawning workers itself.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import fastrnn
import fastrnn.torch

INPUT_SIZE, HIDDEN_SIZE, NUM_LAYERS, SEQUENCE_LENGTH = 8, 32, 2, 20


class Regressor(nn.Module):
    """RNN over [batch, time, feature] -> Linear on the last step's output -> one number."""

    def __init__(self, rnn_class):
        super().__init__()
        self.rnn = rnn_class(INPUT_SIZE, HIDDEN_SIZE, num_layers=NUM_LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN_SIZE, 1)

    def forward(self, x):                     # x [B, T, I] -> [B]
        output, _ = self.rnn(x)               # output [B, T, H]
        return self.head(output[:, -1]).squeeze(-1)


def make_data(seed, steps, batch_size):
    """(inputs [steps, batch, T, I], targets [steps, batch]): a noisy smooth function of the
    sequence, the same in every process (so no process needs to send data to another)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch_size, SEQUENCE_LENGTH, INPUT_SIZE)).astype(np.float32)
    weights = rng.standard_normal(INPUT_SIZE) / np.sqrt(INPUT_SIZE * SEQUENCE_LENGTH)
    y = np.tanh(x.sum(axis=2) @ weights) + 0.05 * rng.standard_normal((steps, batch_size))
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))


def initial_models(seed):
    """The fastrnn.torch and the torch.nn regressors, with the same initial weights."""
    torch.manual_seed(seed)
    reference = Regressor(nn.RNN)
    model = Regressor(fastrnn.torch.RNN)
    model.load_state_dict(reference.state_dict())    # torch's names: loads both ways
    return model, reference


def shard(batch, rank, world_size):
    """This process's contiguous share of a batch (the batch size divides by world_size)."""
    size = batch.shape[0] // world_size
    return batch[rank * size:(rank + 1) * size]


def train(model, inputs, targets, rank, world_size, learning_rate):
    """Train ``model`` under DDP on this rank's shards; the mean loss over all ranks per step."""
    ddp_model = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp_model.parameters(), lr=learning_rate, momentum=0.9)
    losses = []
    for x, y in zip(inputs, targets):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(ddp_model(shard(x, rank, world_size)),
                                      shard(y, rank, world_size))
        loss.backward()                        # DDP averages the gradients over the ranks here
        optimizer.step()
        total = loss.detach().clone()
        dist.all_reduce(total)                 # the whole batch's loss, for the report only
        losses.append(total.item() / world_size)
    return np.array(losses)


def parameters(model):
    return {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}


def worker(rank, world_size, init_method, args):
    """One process: join the group, train both models, report (rank 0) and save."""
    torch.set_num_threads(1)                   # each process gets one core of its own
    fastrnn.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    try:
        inputs, targets = make_data(args.seed, args.steps, args.batch_size)
        model, reference = initial_models(args.seed)
        losses = train(model, inputs, targets, rank, world_size, args.lr)
        reference_losses = train(reference, inputs, targets, rank, world_size, args.lr)
    finally:
        dist.destroy_process_group()
    ours, theirs = parameters(model), parameters(reference)
    if args.save:
        np.savez(os.path.join(args.save, f"rank{rank}.npz"), losses=losses,
                 reference_losses=reference_losses,
                 **{f"fastrnn.{k}": v for k, v in ours.items()},
                 **{f"torch.{k}": v for k, v in theirs.items()})
    if rank == 0:
        report(losses, reference_losses, ours, theirs, world_size)


def report(losses, reference_losses, ours, theirs, world_size):
    print(f"{world_size} processes (gloo), {len(losses)} steps; mean loss over all processes")
    print("step  fastrnn.torch.RNN  torch.nn.RNN")
    for step in sorted({0, len(losses) // 2, len(losses) - 1}):
        print(f"{step:4d}  {losses[step]:17.6f}  {reference_losses[step]:12.6f}")
    gap = max(float(np.max(np.abs(ours[k] - theirs[k]))) for k in ours)
    print(f"largest loss difference: {np.max(np.abs(losses - reference_losses)):.2e}")
    print(f"largest parameter difference after training: {gap:.2e}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2,
                        help="workers to start on this machine (default 2; ignored under torchrun)")
    parser.add_argument("--steps", type=int, default=30, help="training steps (default 30)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="global batch, split evenly over the processes (default 32)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="data and weights seed (default 0)")
    parser.add_argument("--save", metavar="DIR", help="write DIR/rank<N>.npz from each worker")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:    # started by torchrun
        world_size = int(os.environ["WORLD_SIZE"])
        check_batch(args.batch_size, world_size)
        worker(int(os.environ["RANK"]), world_size, "env://", args)
        return 0
    check_batch(args.batch_size, args.processes)
    with tempfile.TemporaryDirectory() as rendezvous:
        init_method = "file://" + os.path.join(rendezvous, "rendezvous")
        mp.spawn(worker, args=(args.processes, init_method, args), nprocs=args.processes)
    return 0


def check_batch(batch_size, world_size):
    if world_size < 1 or batch_size % world_size:
        sys.exit(f"--batch-size {batch_size} must be a multiple of the {world_size} processes")


if __name__ == "__main__":
    sys.exit(main())
