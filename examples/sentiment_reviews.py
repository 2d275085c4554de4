"""Seed 001's task, movie-review sentiment, on reviews of very different lengths, with lengths=.

Why generated reviews: seed 001 trains on IMDB through Keras's downloader, and neither CI nor a
fresh machine here can download it. The reviews below are made from a small grammar with the
features that make the real task ragged and not trivial: lengths from one sentence to about
fifty (8 to 400 words, log-normal like real reviews), neutral sentences about the plot and the
cast between the opinions, negation ("not boring" is praise), mixed opinions (each opinion
sentence agrees with the review's label 80% of the time) and, in 70% of reviews, a closing
verdict ("overall it was a waste"). Labels are balanced; the seed fixes every draw.

Why ``lengths=``: a batch mixes a 10-word review with a 300-word one. Padding them to one
length and reading the RNN's state at the last padded step makes the short reviews walk
through hundreds of padding steps (their state washes out), and costs the padding's work.
With ``rnn(x, lengths=lengths)`` the kernels stop each sequence at its own length (work
proportional to the real words) and ``h_n`` is each review's state after its OWN last word,
so the classifier reads h_n directly. ``--no-lengths`` trains the padded way, for comparison.

Model: Embedding(V, 32) -> fastrnn.RNN(32, H) -> Linear(H, 2) on h_n; softmax cross-entropy,
Adam, gradients clipped to norm 5, batches of 32 shuffled reviews.

    python examples/sentiment_reviews.py [--quick] [--backend cpu|numpy] [--no-lengths] [--plot PATH]
"""
import numpy as np

import fastrnn
from fastrnn import nn

from _common import build_parser, progress, save_curves_if_asked

NEUTRAL = ("the movie film plot story actor actors director scene scenes music was is and but "
           "with a of this it i we watched saw character ending script camera cast minutes two "
           "hours again at home cinema friends weekend sequel original book also then its "
           "first second part lead role city night family war love time").split()
POSITIVE = "great wonderful brilliant moving funny beautiful superb enjoyable masterpiece excellent charming gripping".split()
NEGATIVE = "boring awful terrible dull weak predictable bad waste mess annoying clumsy tedious".split()
VERDICTS = ("overall it was", "in short a", "all in all", "to sum up")
VOCABULARY = ["<pad>"] + sorted(set(NEUTRAL + POSITIVE + NEGATIVE + ["not", "overall", "in",
                                                                     "short", "all", "to", "sum", "up"]))
WORD_ID = {word: i for i, word in enumerate(VOCABULARY)}
LABELS = ("negative", "positive")


def neutral_words(rng, count):
    return list(rng.choice(NEUTRAL, count))


def opinion(rng, positive):
    """A few neutral words around one opinion; half the time as a negated opposite."""
    if rng.random() < 0.3:
        words = ["not", rng.choice(NEGATIVE if positive else POSITIVE)]
    else:
        words = [rng.choice(POSITIVE if positive else NEGATIVE)]
    return neutral_words(rng, rng.integers(1, 5)) + words + neutral_words(rng, rng.integers(0, 4))


def review(rng, positive, max_words):
    """One review of about log-normal length: neutral and opinion sentences, maybe a verdict."""
    target = int(np.clip(rng.lognormal(np.log(40), 0.9), 8, max_words))
    words = []
    while len(words) < target:
        if rng.random() < 0.35:
            words += opinion(rng, positive if rng.random() < 0.8 else not positive)
        else:
            words += neutral_words(rng, rng.integers(4, 10))
    words = words[:target]
    if rng.random() < 0.7:
        verdict = VERDICTS[rng.integers(len(VERDICTS))].split()
        words = words[:max_words - len(verdict) - 1] + verdict + [rng.choice(POSITIVE if positive else NEGATIVE)]
    return words


def make_reviews(count, max_words, rng):
    """(list of id arrays, labels [count] int64), half positive."""
    labels = rng.permutation(np.arange(count) % 2)
    reviews = [np.array([WORD_ID[w] for w in review(rng, bool(label), max_words)], np.int64)
               for label in labels]
    return reviews, labels.astype(np.int64)


def padded_batch(reviews):
    """ids [T, B] (time-major, 0 = padding) and lengths [B] of a list of id arrays."""
    lengths = np.array([len(r) for r in reviews], np.int64)
    ids = np.zeros((lengths.max(), len(reviews)), np.int64)
    for b, r in enumerate(reviews):
        ids[:len(r), b] = r
    return ids, lengths


class ReviewClassifier:
    """Embedding -> RNN -> Linear on h_n (each review's state after its own last word)."""

    def __init__(self, hidden_size, backend, use_lengths, seed):
        self.embedding = nn.Embedding(len(VOCABULARY), 32, seed=seed)
        self.rnn = fastrnn.RNN(32, hidden_size, backend=backend, seed=seed + 1)
        self.head = nn.Linear(hidden_size, 2, seed=seed + 2)
        self.modules = [self.embedding, self.rnn, self.head]
        self.use_lengths = use_lengths

    def forward(self, ids, lengths):
        features = self.embedding(ids)                                        # [T, B, 32]
        self._output_shape = features.shape[:2] + (self.rnn.hidden_size,)
        _, h_n = self.rnn(features, lengths=lengths if self.use_lengths else None)
        return self.head(h_n[-1])                                             # [B, 2]

    def backward(self, grad_logits):
        grad_h_n = self.head.backward(grad_logits)[None]                      # [1, B, H]
        grad_features, _ = self.rnn.backward(np.zeros(self._output_shape, np.float32), grad_h_n)
        self.embedding.backward(grad_features)


def evaluate(model, reviews, labels, batch_size):
    correct, loss = 0, 0.0
    with fastrnn.no_grad():
        for start in range(0, len(reviews), batch_size):
            ids, lengths = padded_batch(reviews[start:start + batch_size])
            logits = model.forward(ids, lengths)
            targets = labels[start:start + batch_size]
            loss += nn.softmax_cross_entropy(logits, targets)[0] * len(targets)
            correct += int(np.sum(logits.argmax(axis=1) == targets))
    return loss / len(reviews), correct / len(reviews)


def train(args):
    rng = np.random.default_rng(args.seed)
    max_words = 150 if args.quick else 400
    train_reviews, train_labels = make_reviews(args.train_size, max_words, rng)
    test_reviews, test_labels = make_reviews(args.train_size // 3, max_words, rng)
    words = np.array([len(r) for r in train_reviews])
    print(f"reviews: {len(train_reviews)} train, {len(test_reviews)} test; words per review "
          f"{words.min()}-{words.max()} (median {int(np.median(words))}); vocabulary "
          f"{len(VOCABULARY)}; {'lengths=' if not args.no_lengths else 'padded, no lengths='}")
    model = ReviewClassifier(args.hidden_size, args.backend, not args.no_lengths, args.seed)
    optimizer = nn.Adam(model.modules, lr=args.lr)
    curves = {"loss": {"train": [], "test": []}, "accuracy": {"test": []}}
    for epoch in progress(range(1, args.epochs + 1), "epochs"):
        order, total = rng.permutation(len(train_reviews)), 0.0
        for start in range(0, len(order), args.batch_size):
            chosen = order[start:start + args.batch_size]
            ids, lengths = padded_batch([train_reviews[i] for i in chosen])
            optimizer.zero_grad()
            loss, grad = nn.softmax_cross_entropy(model.forward(ids, lengths), train_labels[chosen])
            model.backward(grad)
            nn.clip_grad_norm(model.modules, 5.0)
            optimizer.step()
            total += loss * len(chosen)
        test_loss, test_accuracy = evaluate(model, test_reviews, test_labels, args.batch_size)
        curves["loss"]["train"].append(total / len(order))
        curves["loss"]["test"].append(test_loss)
        curves["accuracy"]["test"].append(test_accuracy)
        print(f"epoch {epoch:2d}: train loss {total / len(order):.4f}  test loss {test_loss:.4f}  "
              f"test accuracy {test_accuracy:.3f}")
    return model, curves


def main(argv=None):
    parser = build_parser(__doc__.splitlines()[0], "a small run (CI): 1200 reviews, 8 epochs",
                          backends=("cpu", "numpy"))
    parser.add_argument("--epochs", type=int, help="training epochs (default: 20, quick: 8)")
    parser.add_argument("--train-size", type=int, help="training reviews (default: 6000, quick: 1200)")
    parser.add_argument("--hidden-size", type=int, default=64, help="default: 64")
    parser.add_argument("--batch-size", type=int, default=32, help="default: 32")
    parser.add_argument("--lr", type=float, default=0.005, help="Adam learning rate (default: 0.005)")
    parser.add_argument("--no-lengths", action="store_true",
                        help="pad every batch and read h_n after the padding (the old way)")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (8 if args.quick else 20)
    args.train_size = args.train_size or (1200 if args.quick else 6000)
    fastrnn.set_num_threads(1)       # small matrices: one BLAS thread is faster and steadier
    _, curves = train(args)
    save_curves_if_asked(args.plot, curves, "sentiment_reviews (fastrnn.RNN, lengths=)")
    print(f"test accuracy: {curves['accuracy']['test'][-1]:.3f}")


if __name__ == "__main__":
    main()
