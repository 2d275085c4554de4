"""Character-level text generation: seed 004's Embedding + RNN + Linear, trained in torch.

Why this shape: seed 004 generates lyrics word by word with torch.nn.RNN; here the same model
(embedding -> Elman RNN -> linear over the vocabulary, Adam, cross-entropy, sample the next
token and feed it back) works on characters, with ``fastrnn.torch.RNN`` as the recurrent
layer inside an ordinary torch loop. The text is Python's own documentation
(``pydoc_data.topics``), so the example needs no download. ``--layer torch`` runs the very
same loop with torch.nn.RNN: both layers initialise identically from one seed and see the
same batches, so their curves can be compared step for step, and their times per epoch too.

The loss is in nats per character; the unigram entropy of the text (what a model that ignores
context can reach at best) is printed beside it: a model that uses context falls well below.

Generation runs outside torch, one character at a time with ``fastrnn.RNN.step`` (the trained
weights copied in through ``state_dict``; embedding and head as NumPy arrays): that is the
call whose per-call cost matters when a model writes text. The same loop is timed with
torch.nn.RNN carrying the same weights (same sampler, same random draws) and both speeds are
printed in tokens per second.
"""
import collections
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import fastrnn.torch  # noqa: E402

LAYERS = {"fastrnn": fastrnn.torch.RNN, "torch": nn.RNN}
FULL = dict(chars=300_000, hidden=256, seq_len=100, batch=32, epochs=10, lr=3e-3)
QUICK = dict(chars=40_000, hidden=64, seq_len=32, batch=16, epochs=4, lr=1e-2)


def load_text(chars):
    """The first ``chars`` characters of Python's help topics, joined in sorted order."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[name] for name in sorted(topics))[:chars]


def unigram_entropy(text):
    """-sum p log p over the character frequencies, in nats."""
    counts = np.array(list(collections.Counter(text).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


class Vocabulary:
    """Characters <-> indices (seed 004's word_to_index, one character per token)."""

    def __init__(self, text):
        self.chars = sorted(set(text))
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    def encode(self, text):
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"the prompt has characters the text never uses: {unknown}")
        return torch.tensor([self.index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


class CharModel(nn.Module):
    """Embedding -> RNN -> Linear; batch-first ``[B, T]`` token ids to ``[B, T, V]`` logits."""

    def __init__(self, rnn_class, vocabulary_size, embedding, hidden, layers, **rnn_options):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary_size, embedding)
        self.rnn = rnn_class(embedding, hidden, num_layers=layers, batch_first=True, **rnn_options)
        self.head = nn.Linear(hidden, vocabulary_size)

    def forward(self, tokens, hx=None):
        output, hx = self.rnn(self.embedding(tokens), hx)
        return self.head(output), hx


def random_windows(ids, batch, seq_len, generator):
    """``batch`` random windows of the text: inputs [B, T] and next-character targets [B, T]."""
    starts = torch.randint(0, len(ids) - seq_len - 1, (batch,), generator=generator)
    windows = torch.stack([ids[s:s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def cross_entropy(logits, targets):
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_epoch(model, optimizer, ids, steps, config, generator, description):
    """``steps`` Adam steps on random windows; returns the mean training loss."""
    model.train()
    total = 0.0
    bar = _common.progress(range(steps), description, leave=False)
    for _ in bar:
        inputs, targets = random_windows(ids, config["batch"], config["seq_len"], generator)
        optimizer.zero_grad()
        loss = cross_entropy(model(inputs)[0], targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)   # seeds 000/003
        optimizer.step()
        total += loss.item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return total / steps


@torch.no_grad()
def evaluate(model, ids, seq_len):
    """Mean next-character loss over the held-out text, cut into consecutive windows."""
    model.eval()
    count = (len(ids) - 1) // seq_len
    inputs = ids[:count * seq_len].reshape(count, seq_len)
    targets = ids[1:count * seq_len + 1].reshape(count, seq_len)
    return cross_entropy(model(inputs)[0], targets).item()


def sample(logits, temperature, rng):
    """The next id from NumPy logits [V]: softmax at ``temperature`` then one draw from
    ``rng`` (temperature 0: the most likely id). Both engines share it, so their timings
    differ by the model only."""
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = (logits - logits.max()) / temperature
    cumulative = np.cumsum(np.exp(scaled))
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), len(logits) - 1)


class StepGenerator:
    """The trained model outside torch: embedding rows and head as NumPy arrays, the recurrent
    layer as a ``fastrnn.RNN`` driven by ``step`` (seed 004's predict loop, one token a call)."""

    def __init__(self, model, backend):
        module = model.rnn
        self.rnn = fastrnn.RNN(module.input_size, module.hidden_size, module.num_layers,
                               backend=backend).eval()
        self.rnn.load_state_dict(module.state_dict())     # torch's names: loads as it is
        self.embedding = model.embedding.weight.detach().numpy().copy()    # [V, E]
        self.head_weight = model.head.weight.detach().numpy().copy()       # [V, H]
        self.head_bias = model.head.bias.detach().numpy().copy()           # [V]

    def start(self, prompt_ids):
        """(logits of the next token, state [L, H]) after the prompt: one forward call."""
        _, h = self.rnn(self.embedding[prompt_ids])                       # unbatched [T, E]
        return h[-1] @ self.head_weight.T + self.head_bias, h

    def next(self, token, h):
        h = self.rnn.step(self.embedding[token], h, out=h)                 # [L, H], in place
        return h[-1] @ self.head_weight.T + self.head_bias, h


class TorchGenerator:
    """The same loop with torch.nn.RNN (torch's embedding and head), for the comparison."""

    def __init__(self, model, vocabulary_size):
        self.model = CharModel(nn.RNN, vocabulary_size, model.embedding.embedding_dim,
                               model.rnn.hidden_size, model.rnn.num_layers)
        self.model.load_state_dict(model.state_dict())
        self.model.eval()

    @torch.no_grad()
    def start(self, prompt_ids):
        logits, h = self.model(torch.as_tensor(prompt_ids)[None])
        return logits[0, -1].numpy(), h

    @torch.no_grad()
    def next(self, token, h):
        logits, h = self.model(torch.tensor([[token]]), h)
        return logits[0, -1].numpy(), h


def generate(generator, vocabulary, prompt, length, temperature, seed):
    """(text, seconds per generated token): the prompt, then ``length`` sampled characters."""
    rng = np.random.default_rng(seed)
    logits, h = generator.start(vocabulary.encode(prompt).numpy())
    ids = []
    start = time.perf_counter()
    for _ in range(length):
        ids.append(sample(logits, temperature, rng))
        logits, h = generator.next(ids[-1], h)
    seconds = (time.perf_counter() - start) / max(length, 1)
    return prompt + vocabulary.decode(ids), seconds


def parse_arguments(argv=None):
    parser = _common.build_parser(
        __doc__.split("\n")[0], backends=["auto", "cpu", "numpy"],
        quick_help="a few seconds: 40k characters, a small model, 4 short epochs (CI runs it)")
    parser.add_argument("--layer", choices=sorted(LAYERS), default="fastrnn",
                        help="recurrent layer: fastrnn.torch.RNN or torch.nn.RNN (default fastrnn)")
    parser.add_argument("--epochs", type=int, help="epochs (default: 10, quick: 4)")
    parser.add_argument("--hidden", type=int, help="hidden size (default: 256, quick: 64)")
    parser.add_argument("--layers", type=int, default=1, help="RNN layers (default: 1)")
    parser.add_argument("--prompt", default="The ", help="text to start generating from")
    parser.add_argument("--length", type=int, default=300, help="characters to generate")
    parser.add_argument("--temperature", type=float, default=0.7,
                        help="sampling temperature, 0 for greedy (default: 0.7)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS and torch threads (default: 1, see design.md)")
    return parser.parse_args(argv)


def build_config(args):
    config = dict(QUICK if args.quick else FULL)
    for key in ("epochs", "hidden"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    return config


def main(argv=None):
    args = parse_arguments(argv)
    config = build_config(args)
    fastrnn.set_num_threads(args.threads)    # every BLAS, SciPy's (the kernels') included
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    text = load_text(config["chars"])
    vocabulary = Vocabulary(text)
    ids = vocabulary.encode(text)
    split = int(0.9 * len(ids))
    train_ids, valid_ids = ids[:split], ids[split:]
    entropy = unigram_entropy(text)
    print(f"text: {len(text)} characters of pydoc_data.topics, {len(vocabulary.chars)} distinct, "
          f"unigram entropy {entropy:.3f} nats/char")

    rnn_options = {"backend": args.backend} if args.layer == "fastrnn" else {}
    model = CharModel(LAYERS[args.layer], len(vocabulary.chars), 32, config["hidden"],
                      args.layers, **rnn_options)
    print(f"model: {model.rnn!r} ({type(model.rnn).__module__}), "
          f"{sum(p.numel() for p in model.parameters())} parameters; BLAS: "
          f"{_common.blas_description()}, torch threads {torch.get_num_threads()}")
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    batches = torch.Generator().manual_seed(args.seed)
    steps = max(1, len(train_ids) // (config["batch"] * config["seq_len"]))

    train_losses, valid_losses, times = [], [], {}
    for epoch in range(1, config["epochs"] + 1):
        with _common.stopwatch(times, epoch):
            train_losses.append(train_epoch(model, optimizer, train_ids, steps, config, batches,
                                            f"epoch {epoch}/{config['epochs']}"))
        valid_losses.append(evaluate(model, valid_ids, config["seq_len"]))
        print(f"epoch {epoch:2d}: train {train_losses[-1]:.3f}  valid {valid_losses[-1]:.3f} "
              f"nats/char  ({times[epoch]:.2f} s, {steps} steps)")

    per_epoch = sum(times.values()) / len(times)
    print(f"time per epoch ({args.layer}): {per_epoch:.2f} s")
    step_backend = "cpu" if args.backend == "auto" else args.backend
    engines = {"fastrnn.RNN.step": StepGenerator(model, step_backend),
               "torch.nn.RNN": TorchGenerator(model, len(vocabulary.chars))}
    seconds, texts = {}, {}
    for _ in range(3):             # alternating, best of 3 (design.md's performance protocol)
        for name, engine in engines.items():
            text, per_token = generate(engine, vocabulary, args.prompt, args.length,
                                       args.temperature, args.seed)
            seconds[name] = min(seconds.get(name, math.inf), per_token)
            texts[name] = text
    print(f"--- generated from {args.prompt!r} (temperature {args.temperature}) ---")
    print(texts["fastrnn.RNN.step"])
    print("---")
    rates = {name: 1 / s for name, s in seconds.items()}
    print(f"generation: fastrnn.RNN.step {rates['fastrnn.RNN.step']:.0f} tokens/s, "
          f"torch.nn.RNN {rates['torch.nn.RNN']:.0f} tokens/s "
          f"({rates['fastrnn.RNN.step'] / rates['torch.nn.RNN']:.2f}x), same text: "
          f"{'yes' if texts['fastrnn.RNN.step'] == texts['torch.nn.RNN'] else 'no'}")
    if args.plot:
        _common.save_curves(args.plot, {"loss (nats/char)": {
            "train": train_losses, "validation": valid_losses,
            "unigram entropy": [entropy] * len(train_losses)}},
            title=f"char-level RNN on pydoc topics ({args.layer})")
        print(f"plot saved to {args.plot}")
    final = valid_losses[-1]
    if not math.isfinite(final):
        raise SystemExit(f"training diverged: final validation loss {final}")
    print(f"final loss: {final:.3f} nats/char (unigram entropy {entropy:.3f})")


if __name__ == "__main__":
    main()
