"""Seed 000's demo: is a short phrase positive or negative? A many-to-one RNN on 58 phrases.

The data are the seed's own train and test phrases. Like the seed, the model reads one word
per step and classifies from the last hidden state, trained with softmax cross-entropy and
gradients clipped element-wise to [-1, 1]. Two differences make it run in seconds: words go
through an Embedding (the seed's one-hot vector times a weight matrix is the same thing) and
phrases of the same length form one batch, so no padding is needed and each epoch is a
handful of calls into fastrnn's kernels rather than one per phrase.

    python examples/sentiment_phrases.py [--quick] [--backend numpy|cpu] [--plot curves.png]
"""
import numpy as np

import fastrnn
from fastrnn import nn

from _common import ManyToOne, build_parser, progress, save_curves_if_asked

TRAIN_DATA = {
    'good': True, 'bad': False, 'happy': True, 'sad': False,
    'not good': False, 'not bad': True, 'not happy': False, 'not sad': True,
    'very good': True, 'very bad': False, 'very happy': True, 'very sad': False,
    'i am happy': True, 'this is good': True, 'i am bad': False, 'this is bad': False,
    'i am sad': False, 'this is sad': False, 'i am not happy': False,
    'this is not good': False, 'i am not bad': True, 'this is not sad': True,
    'i am very happy': True, 'this is very good': True, 'i am very bad': False,
    'this is very sad': False, 'this is very happy': True, 'i am good not bad': True,
    'this is good not bad': True, 'i am bad not good': False, 'i am good and happy': True,
    'this is not good and not happy': False, 'i am not at all good': False,
    'i am not at all bad': True, 'i am not at all happy': False,
    'this is not at all sad': True, 'this is not at all happy': False,
    'i am good right now': True, 'i am bad right now': False, 'this is bad right now': False,
    'i am sad right now': False, 'i was good earlier': True, 'i was happy earlier': True,
    'i was bad earlier': False, 'i was sad earlier': False, 'i am very bad right now': False,
    'this is very good right now': True, 'this is very sad right now': False,
    'this was bad earlier': False, 'this was very good earlier': True,
    'this was very bad earlier': False, 'this was very happy earlier': True,
    'this was very sad earlier': False, 'i was good and not bad earlier': True,
    'i was not good and not happy earlier': False, 'i am not at all bad or sad right now': True,
    'i am not at all good or happy right now': False,
    'this was not happy and not good earlier': False,
}

TEST_DATA = {
    'this is happy': True, 'i am good': True, 'this is not happy': False, 'i am not good': False,
    'this is not bad': True, 'i am not sad': True, 'i am very good': True,
    'this is very bad': False, 'i am very sad': False, 'this is bad not good': False,
    'this is good and happy': True, 'i am not good and not happy': False,
    'i am not at all sad': True, 'this is not at all good': False,
    'this is not at all bad': True, 'this is good right now': True,
    'this is sad right now': False, 'this is very bad right now': False,
    'this was good earlier': True, 'i was not happy and not good earlier': False,
}

LABELS = ("negative", "positive")          # class 0, class 1 (the seed's False, True)


def build_vocabulary(phrases):
    """{word: id}, in sorted order so that ids do not depend on hashing."""
    return {word: i for i, word in enumerate(sorted({w for p in phrases for w in p.split()}))}


def encode(phrase, vocabulary):
    try:
        return [vocabulary[word] for word in phrase.split()]
    except KeyError as unknown:
        raise ValueError(f"word {unknown} of {phrase!r} is not in the training "
                         "vocabulary") from None


def length_batches(data, vocabulary):
    """One batch per phrase length: ``(ids [T, B], labels [B], phrases)``, no padding needed."""
    by_length = {}
    for phrase, label in data.items():
        by_length.setdefault(len(phrase.split()), []).append((phrase, int(label)))
    batches = []
    for length in sorted(by_length):
        phrases, labels = zip(*by_length[length])
        ids = np.array([encode(p, vocabulary) for p in phrases], dtype=np.int64).T
        batches.append((ids, np.array(labels), list(phrases)))
    return batches


def evaluate(model, batches):
    """(mean loss, accuracy) over all phrases, without keeping anything for backward."""
    total_loss, correct, count = 0.0, 0, 0
    with fastrnn.no_grad():
        for ids, labels, _ in batches:
            logits = model(ids)
            total_loss += nn.softmax_cross_entropy(logits, labels)[0] * len(labels)
            correct += int(np.sum(logits.argmax(axis=1) == labels))
            count += len(labels)
    return total_loss / count, correct / count


def predict(model, phrase, vocabulary):
    with fastrnn.no_grad():
        logits = model(np.array([encode(phrase, vocabulary)]).T)
    return LABELS[int(logits.argmax())]


def train(args):
    vocabulary = build_vocabulary(TRAIN_DATA)
    train_batches = length_batches(TRAIN_DATA, vocabulary)
    test_batches = length_batches(TEST_DATA, vocabulary)
    model = ManyToOne(
        embedding=nn.Embedding(len(vocabulary), args.embedding_size, seed=args.seed),
        rnn=fastrnn.RNN(args.embedding_size, args.hidden_size, backend=args.backend,
                        seed=args.seed + 1),
        head=nn.Linear(args.hidden_size, len(LABELS), seed=args.seed + 2))
    optimizer = nn.Adam(model.modules, lr=args.lr)
    clip = lambda modules: nn.clip_grad_value(modules, 1.0)     # seed 000's np.clip(d, -1, 1)
    order = np.random.default_rng(args.seed)
    curves = {"loss": {"train": [], "test": []}, "accuracy": {"train": [], "test": []}}
    bar = progress(range(args.epochs), "epochs")
    for _ in bar:
        for index in order.permutation(len(train_batches)):
            ids, labels, _ = train_batches[index]
            model.train_step(optimizer, ids, labels, nn.softmax_cross_entropy, clip)
        for split, batches in (("train", train_batches), ("test", test_batches)):
            loss, accuracy = evaluate(model, batches)
            curves["loss"][split].append(loss)
            curves["accuracy"][split].append(accuracy)
        bar.set_postfix(train_loss=f"{curves['loss']['train'][-1]:.3f}",
                        test_acc=f"{curves['accuracy']['test'][-1]:.3f}")
    return model, vocabulary, curves


def main():
    parser = build_parser(__doc__.splitlines()[0], "train for a few epochs only (CI smoke run)",
                          backends=("cpu", "numpy"))
    parser.add_argument("--epochs", type=int, help="training epochs (default: 300, quick: 60)")
    parser.add_argument("--hidden-size", type=int, default=64, help="default: 64, as the seed")
    parser.add_argument("--embedding-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.003,
                        help="Adam learning rate (default: 0.003)")
    args = parser.parse_args()
    args.epochs = args.epochs or (60 if args.quick else 300)
    fastrnn.set_num_threads(1)       # small matrices: one BLAS thread is faster and steadier

    model, vocabulary, curves = train(args)
    for phrase in ("i am not earlier", "this is not at all bad", "i was not happy earlier"):
        print(f"{phrase!r}: {predict(model, phrase, vocabulary)}")
    save_curves_if_asked(args.plot, curves, "sentiment_phrases (fastrnn.RNN + fastrnn.nn)")
    print(f"train loss: {curves['loss']['train'][-1]:.4f} | "
          f"test loss: {curves['loss']['test'][-1]:.4f}")
    print(f"test accuracy: {curves['accuracy']['test'][-1]:.3f}")


if __name__ == "__main__":
    main()
