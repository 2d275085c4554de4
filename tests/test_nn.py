"""fastrnn.nn: gradients by finite differences, update rules by hand and against torch, errors."""
import numpy as np
import pytest

import fastrnn
from fastrnn import nn
from helpers import numerical_gradient


# ------------------------------------------------------------------------------- helpers
def weighted_sum_loss(rng, shape):
    """A loss ``sum(y * w)`` with fixed random w, so that dL/dy = w is not all ones."""
    weights = rng.standard_normal(shape)
    return (lambda y: float(np.sum(y * weights))), weights


def textbook_adam(params, grads_per_step, lr, beta1, beta2, eps):
    """Adam as Kingma & Ba write it (bias-corrected moments), one array at a time."""
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1 ** t), v[i] / (1 - beta2 ** t)
            params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


def set_grads(module, grads):
    for (name, _), g in zip(module.named_parameters(), grads):
        module.grads[name][...] = g


def random_grads(rng, module):
    return [rng.standard_normal(p.shape).astype(p.dtype) for _, p in module.named_parameters()]


# ------------------------------------------------------------------------------- Linear
def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    layer = nn.Linear(4, 3, dtype="float64", seed=1)
    x = rng.standard_normal((2, 5, 4))                 # leading dims [2, 5] go through as is
    loss_of_y, grad_y = weighted_sum_loss(rng, (2, 5, 3))
    loss = lambda: loss_of_y(layer.forward(x))
    layer.forward(x)
    grad_x = layer.backward(grad_y)
    np.testing.assert_allclose(grad_x, numerical_gradient(loss, x), rtol=1e-7, atol=1e-8)
    for name, param in layer.named_parameters():
        np.testing.assert_allclose(layer.grads[name], numerical_gradient(loss, param),
                                   rtol=1e-7, atol=1e-8, err_msg=name)


def test_linear_forward_is_x_wt_plus_b_and_without_bias_has_no_bias():
    layer = nn.Linear(2, 2, dtype="float64", seed=0)
    layer.load_state_dict({"weight": [[1.0, 2.0], [3.0, 4.0]], "bias": [0.5, -0.5]})
    np.testing.assert_array_equal(layer(np.array([[1.0, 1.0]])), [[3.5, 6.5]])
    no_bias = nn.Linear(2, 5, bias=False, seed=0)
    assert [name for name, _ in no_bias.named_parameters()] == ["weight"]
    assert set(no_bias.grads) == {"weight"}


def test_linear_init_is_torch_uniform_bound_and_seeded():
    layer = nn.Linear(16, 64, seed=3)
    bound = 1 / np.sqrt(16)
    for _, param in layer.named_parameters():
        assert np.all(np.abs(param) <= bound)
    assert np.abs(layer.weight).max() > 0.9 * bound        # spread over the whole interval
    assert layer.weight.shape == (64, 16) and layer.bias.shape == (64,)
    np.testing.assert_array_equal(layer.weight, nn.Linear(16, 64, seed=3).weight)
    assert not np.array_equal(layer.weight, nn.Linear(16, 64, seed=4).weight)


def test_linear_matches_torch_forward_and_backward():
    torch = pytest.importorskip("torch")
    ours = nn.Linear(5, 3, dtype="float64", seed=0)
    theirs = torch.nn.Linear(5, 3, dtype=torch.float64)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((4, 5))
    x_t = torch.tensor(x, requires_grad=True)
    y_t = theirs(x_t)
    grad_y = np.random.default_rng(2).standard_normal((4, 3))
    y_t.backward(torch.tensor(grad_y))
    np.testing.assert_allclose(ours(x), y_t.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.backward(grad_y), x_t.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.grads["weight"], theirs.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.grads["bias"], theirs.bias.grad.numpy(), rtol=1e-12)


def test_backward_adds_into_grads_until_zero_grad():
    layer = nn.Linear(3, 2, dtype="float64", seed=0)
    x, grad_y = np.ones((4, 3)), np.ones((4, 2))
    layer(x)
    layer.backward(grad_y)
    once = layer.grads["weight"].copy()
    layer.backward(grad_y)
    np.testing.assert_allclose(layer.grads["weight"], 2 * once)
    grads_before = layer.grads["weight"]
    layer.zero_grad()
    assert layer.grads["weight"] is grads_before            # cleared in place, same array
    assert not layer.grads["weight"].any() and not layer.grads["bias"].any()


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    layer = nn.Linear(3, 4, seed=0)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    loss, grad_y = nn.softmax_cross_entropy(y, np.array([0, 1, 2, 3, 0]))
    assert grad_y.dtype == np.float32
    assert layer.backward(grad_y).dtype == np.float32
    assert layer.grads["weight"].dtype == np.float32
    emb = nn.Embedding(7, 3, seed=0)
    assert emb(np.array([1, 2])).dtype == np.float32
    optimizer = nn.Adam([layer, emb], lr=0.1)
    optimizer.step()
    assert all(p.dtype == np.float32 for _, p in layer.named_parameters())
    # float32 gradients agree with float64 ones to float32 precision
    layer64 = nn.Linear(3, 4, dtype="float64", seed=0)
    layer64.load_state_dict(layer.state_dict())
    layer.zero_grad()
    layer(x)
    layer.backward(grad_y)
    layer64(x.astype(np.float64))
    layer64.backward(grad_y.astype(np.float64))
    np.testing.assert_allclose(layer.grads["weight"], layer64.grads["weight"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- Embedding
def test_embedding_backward_matches_finite_differences_with_repeated_ids():
    rng = np.random.default_rng(0)
    emb = nn.Embedding(6, 3, dtype="float64", seed=0)
    ids = np.array([[1, 4, 1], [0, 1, 5]])                  # id 1 three times, 2 and 3 never
    loss_of_y, grad_y = weighted_sum_loss(rng, (2, 3, 3))
    emb(ids)
    assert emb.backward(grad_y) is None
    expected = numerical_gradient(lambda: loss_of_y(emb.forward(ids)), emb.weight)
    np.testing.assert_allclose(emb.grads["weight"], expected, rtol=1e-7, atol=1e-8)
    assert not emb.grads["weight"][[2, 3]].any()


def test_embedding_forward_picks_rows_and_init_is_standard_normal():
    emb = nn.Embedding(2000, 16, dtype="float64", seed=0)
    np.testing.assert_array_equal(emb(np.array([[3, 7]]))[0, 1], emb.weight[7])
    assert abs(emb.weight.mean()) < 0.02 and abs(emb.weight.std() - 1) < 0.02
    ids = np.array([1, 2])
    out = emb(ids)
    out[...] = 0                           # the output is a copy: the table is untouched
    assert emb.weight[1].any()


def test_embedding_keeps_its_own_copy_of_the_ids():
    emb = nn.Embedding(5, 2, dtype="float64", seed=0)
    ids = np.array([0, 1])
    emb(ids)
    ids[:] = 4                             # the caller reuses its buffer before backward
    emb.backward(np.ones((2, 2)))
    assert emb.grads["weight"][[0, 1]].all() and not emb.grads["weight"][4].any()


def test_embedding_matches_torch_backward():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Embedding(5, 3, dtype=torch.float64)
    ours = nn.Embedding(5, 3, dtype="float64")
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    ids = np.array([[0, 2, 2], [4, 0, 2]])
    grad_y = np.random.default_rng(0).standard_normal((2, 3, 3))
    theirs(torch.tensor(ids)).backward(torch.tensor(grad_y))
    ours(ids)
    ours.backward(grad_y)
    np.testing.assert_allclose(ours.grads["weight"], theirs.weight.grad.numpy(), rtol=1e-12)


# ------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5)])
def test_softmax_cross_entropy_value_and_gradient(shape):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape) * 3
    targets = rng.integers(0, shape[-1], shape[:-1])
    loss, grad = nn.softmax_cross_entropy(logits, targets)
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    picked = np.take_along_axis(probs, targets[..., None], axis=-1)
    assert loss == pytest.approx(-np.log(picked).mean(), rel=1e-12)
    expected = numerical_gradient(lambda: nn.softmax_cross_entropy(logits, targets)[0], logits)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)


def test_softmax_cross_entropy_seed_example_and_large_logits():
    # seed 000: softmax [0.2, 0.2, 0.6] with target 0 has gradient [-0.8, 0.2, 0.6]
    _, grad = nn.softmax_cross_entropy(np.log([[0.2, 0.2, 0.6]]), np.array([0]))
    np.testing.assert_allclose(grad, [[-0.8, 0.2, 0.6]], rtol=1e-12)
    loss, grad = nn.softmax_cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))
    assert loss == pytest.approx(1000.0) and np.isfinite(grad).all()


def test_softmax_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits, targets = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(targets))
    loss_t.backward()
    loss, grad = nn.softmax_cross_entropy(logits, targets)
    assert loss == pytest.approx(loss_t.item(), rel=1e-12)
    np.testing.assert_allclose(grad, logits_t.grad.numpy(), rtol=1e-10)


def test_mse_loss_value_and_gradient():
    rng = np.random.default_rng(0)
    prediction, target = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    loss, grad = nn.mse_loss(prediction, target)
    assert loss == pytest.approx(np.sum((prediction - target) ** 2) / 6, rel=1e-12)
    expected = numerical_gradient(lambda: nn.mse_loss(prediction, target)[0], prediction)
    np.testing.assert_allclose(grad, expected, rtol=1e-7, atol=1e-9)


def test_embedding_rnn_linear_chain_matches_finite_differences():
    """The modules compose: Embedding -> fastrnn.RNN -> Linear on the last step -> loss."""
    emb = nn.Embedding(7, 3, dtype="float64", seed=0)
    rnn = fastrnn.RNN(3, 5, dtype="float64", backend="numpy", seed=1)
    head = nn.Linear(5, 2, dtype="float64", seed=2)
    ids, targets = np.array([[1, 2], [3, 3], [6, 0]]), np.array([0, 1])    # [T=3, B=2]

    def loss_and_backward(backward):
        output, _ = rnn(emb(ids))                           # [T, B, H]
        loss, grad_logits = nn.softmax_cross_entropy(head(output[-1]), targets)
        if backward:
            grad_output = np.zeros_like(output)
            grad_output[-1] = head.backward(grad_logits)
            grad_x, _ = rnn.backward(grad_output)
            emb.backward(grad_x)
        return loss

    loss_and_backward(True)
    for module in (emb, rnn, head):
        for name, param in module.named_parameters():
            expected = numerical_gradient(lambda: loss_and_backward(False), param)
            np.testing.assert_allclose(module.grads[name], expected, rtol=1e-6, atol=1e-9,
                                       err_msg=f"{type(module).__name__}.{name}")


# ------------------------------------------------------------------------------- optimizers
def test_sgd_plain_and_momentum_match_the_rule_by_hand():
    rng = np.random.default_rng(0)
    layer = nn.Linear(3, 2, dtype="float64", seed=0)
    start = [p.copy() for _, p in layer.named_parameters()]
    steps = [random_grads(rng, layer) for _ in range(3)]
    plain = nn.SGD([layer], lr=0.1)
    set_grads(layer, steps[0])
    plain.step()
    for (_, p), p0, g in zip(layer.named_parameters(), start, steps[0]):
        np.testing.assert_allclose(p, p0 - 0.1 * g, rtol=1e-14)

    layer.load_state_dict(dict(zip(["weight", "bias"], start)))
    sgd = nn.SGD([layer], lr=0.1, momentum=0.9)
    for grads in steps:
        set_grads(layer, grads)
        sgd.step()
    for (_, p), p0, (g1, g2, g3) in zip(layer.named_parameters(), start, zip(*steps)):
        b1 = g1                            # torch: the first buffer is the gradient itself
        b2 = 0.9 * b1 + g2
        b3 = 0.9 * b2 + g3
        np.testing.assert_allclose(p, p0 - 0.1 * (b1 + b2 + b3), rtol=1e-12)


def test_adam_matches_textbook_adam_by_hand():
    rng = np.random.default_rng(0)
    layer = nn.Linear(4, 3, dtype="float64", seed=0)
    start = [p.copy() for _, p in layer.named_parameters()]
    steps = [random_grads(rng, layer) for _ in range(3)]
    adam = nn.Adam([layer], lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    for grads in steps:
        set_grads(layer, grads)
        adam.step()
    expected = textbook_adam(start, steps, lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6)
    for (name, p), e in zip(layer.named_parameters(), expected):
        np.testing.assert_allclose(p, e, rtol=1e-12, err_msg=name)
    # the first Adam step moves every element by about lr, whatever the gradient's scale
    fresh = nn.Linear(4, 3, dtype="float64", seed=0)
    set_grads(fresh, [1e3 * g for g in steps[0]])
    nn.Adam([fresh], lr=0.01).step()
    np.testing.assert_allclose(np.abs(fresh.weight - start[0]), 0.01, rtol=1e-6)


def test_optimizers_update_in_place_and_work_on_fastrnn_rnn():
    rnn = fastrnn.RNN(3, 4, backend="numpy", seed=0)
    weight = rnn.weight_hh_l0
    before = weight.copy()
    rnn.grads["weight_hh_l0"][...] = 1.0
    optimizer = nn.SGD([rnn], lr=0.5)
    optimizer.step()
    assert rnn.weight_hh_l0 is weight                     # the layer's own array, updated
    np.testing.assert_allclose(weight, before - 0.5, rtol=1e-6)
    optimizer.zero_grad()
    assert not any(g.any() for g in rnn.grads.values())


@pytest.mark.parametrize("kind", ["sgd", "sgd_momentum", "adam", "adam_defaults"])
def test_optimizers_match_torch_on_the_same_gradients(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    modules = [fastrnn.RNN(3, 4, dtype="float64", backend="numpy", seed=0),
               nn.Linear(4, 2, dtype="float64", seed=1)]
    torch_params = [torch.nn.Parameter(torch.tensor(p.copy()))
                    for m in modules for _, p in m.named_parameters()]
    ours, theirs = {
        "sgd": (lambda: nn.SGD(modules, lr=0.05), lambda: torch.optim.SGD(torch_params, lr=0.05)),
        "sgd_momentum": (lambda: nn.SGD(modules, lr=0.05, momentum=0.9),
                         lambda: torch.optim.SGD(torch_params, lr=0.05, momentum=0.9)),
        "adam": (lambda: nn.Adam(modules, lr=0.02, betas=(0.5, 0.9), eps=1e-4),
                 lambda: torch.optim.Adam(torch_params, lr=0.02, betas=(0.5, 0.9), eps=1e-4)),
        "adam_defaults": (lambda: nn.Adam(modules), lambda: torch.optim.Adam(torch_params)),
    }[kind]
    ours, theirs = ours(), theirs()
    for _ in range(4):
        grads = [g for m in modules for g in random_grads(rng, m)]
        for tp, g in zip(torch_params, grads):
            tp.grad = torch.tensor(g)
        offset = 0
        for m in modules:
            count = len(m.named_parameters())
            set_grads(m, grads[offset:offset + count])
            offset += count
        ours.step()
        theirs.step()
    ours_flat = [p for m in modules for _, p in m.named_parameters()]
    for p, tp in zip(ours_flat, torch_params):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_training_loop_lowers_the_loss():
    """The pieces together fit a tiny task: Adam + clipping on RNN + Linear."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 32, 2)).astype(np.float32)       # [T, B, I]
    targets = (x[:, :, 0].sum(axis=0) > 0).astype(np.int64)       # sign of a running sum
    rnn, head = fastrnn.RNN(2, 16, seed=0), nn.Linear(16, 2, seed=0)
    optimizer = nn.Adam([rnn, head], lr=0.02)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        output, _ = rnn(x)
        loss, grad_logits = nn.softmax_cross_entropy(head(output[-1]), targets)
        grad_output = np.zeros_like(output)
        grad_output[-1] = head.backward(grad_logits)
        rnn.backward(grad_output)
        nn.clip_grad_norm([rnn, head], 1.0)
        optimizer.step()
        losses.append(loss)
    assert losses[-1] < 0.25 * losses[0]


# ------------------------------------------------------------------------------- clipping
def test_clip_grad_norm_by_hand():
    layer = nn.Linear(2, 1, dtype="float64", seed=0)
    layer.grads["weight"][...] = [[3.0, 0.0]]
    layer.grads["bias"][...] = [4.0]                         # joint norm: 5
    total = nn.clip_grad_norm([layer], max_norm=1.0)
    assert total == pytest.approx(5.0)
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(layer.grads["weight"], [[3.0 * scale, 0.0]], rtol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], [4.0 * scale], rtol=1e-12)
    # below the bound: the norm is returned and nothing changes
    assert nn.clip_grad_norm(layer, max_norm=10.0) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(layer.grads["bias"], [4.0 * scale], rtol=1e-12)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_clip_grad_norm_matches_torch(norm_type):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    modules = [fastrnn.RNN(3, 4, dtype="float64", backend="numpy", seed=0),
               nn.Linear(4, 2, dtype="float64", seed=1)]
    grads = [rng.standard_normal(p.shape) for m in modules for _, p in m.named_parameters()]
    offset = 0
    for m in modules:
        count = len(m.named_parameters())
        set_grads(m, grads[offset:offset + count])
        offset += count
    tensors = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    expected_total = torch.nn.utils.clip_grad_norm_(tensors, 0.5, norm_type=norm_type)
    total = nn.clip_grad_norm(modules, 0.5, norm_type=norm_type)
    assert total == pytest.approx(expected_total.item(), rel=1e-12)
    ours = [m.grads[name] for m in modules for name, _ in m.named_parameters()]
    for g, t in zip(ours, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)


def test_clip_grad_value_clamps_elementwise():
    layer = nn.Linear(3, 1, dtype="float64", seed=0)
    layer.grads["weight"][...] = [[-2.5, 0.3, 7.0]]
    layer.grads["bias"][...] = [-0.9]
    nn.clip_grad_value([layer], 1.0)
    np.testing.assert_array_equal(layer.grads["weight"], [[-1.0, 0.3, 1.0]])
    np.testing.assert_array_equal(layer.grads["bias"], [-0.9])


# ------------------------------------------------------------------------------- state and errors
def test_state_dict_round_trip_and_copies():
    layer = nn.Linear(3, 2, seed=0)
    state = layer.state_dict()
    state["weight"][...] = 0                                 # a copy: the layer is untouched
    assert layer.weight.any()
    other = nn.Linear(3, 2, seed=1)
    weight = other.weight
    other.load_state_dict(layer.state_dict())
    assert other.weight is weight                            # loaded in place
    np.testing.assert_array_equal(other.weight, layer.weight)


def test_load_state_dict_errors():
    layer = nn.Linear(3, 2, seed=0)
    with pytest.raises(RuntimeError, match=r"missing key\(s\) \['bias'\]"):
        layer.load_state_dict({"weight": np.zeros((2, 3))})
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        layer.load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(2)})
    assert layer.weight.any()                                # nothing half-loaded


def test_layer_input_errors():
    layer = nn.Linear(3, 2, seed=0)
    with pytest.raises(fastrnn.ShapeError, match=r"\[\*, 3\].*got \(4, 2\)"):
        layer(np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="dtype float32.*got float64"):
        layer(np.zeros((4, 3)))
    with pytest.raises(RuntimeError, match="forward pass first"):
        layer.backward(np.zeros((4, 2), np.float32))
    layer(np.zeros((4, 3), np.float32))
    with pytest.raises(fastrnn.ShapeError, match="grad_output"):
        layer.backward(np.zeros((4, 3), np.float32))
    fresh = nn.Linear(3, 2, seed=0)
    with fastrnn.no_grad():
        fresh(np.zeros((1, 3), np.float32))
    with pytest.raises(RuntimeError, match="no_grad"):
        fresh.backward(np.zeros((1, 2), np.float32))


def test_embedding_and_loss_errors():
    emb = nn.Embedding(4, 2, seed=0)
    with pytest.raises(TypeError, match="integer ids"):
        emb(np.array([0.0, 1.0]))
    with pytest.raises(IndexError, match=r"id 4 is out of range.*\[0, 4\)"):
        emb(np.array([0, 4]))
    with pytest.raises(IndexError, match="id -1"):
        emb(np.array([-1, 2]))
    logits = np.zeros((2, 3))
    with pytest.raises(IndexError, match="Target 3 is out of bounds"):
        nn.softmax_cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(TypeError, match="integer class indices"):
        nn.softmax_cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(fastrnn.ShapeError, match="same leading shape"):
        nn.softmax_cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(fastrnn.ShapeError, match="target"):
        nn.mse_loss(np.zeros(3), np.zeros(4))


def test_constructor_and_optimizer_errors():
    with pytest.raises(ValueError, match="in_features must be greater than zero"):
        nn.Linear(0, 3)
    with pytest.raises(TypeError, match="out_features should be of type int"):
        nn.Linear(2, 3.0)
    with pytest.raises(ValueError, match="dtype must be"):
        nn.Embedding(3, 2, dtype="int32")
    layer = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="named_parameters"):
        nn.SGD([layer, np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        nn.Adam([layer], lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        nn.Adam([layer], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        nn.clip_grad_norm([layer], -1.0)
    with pytest.raises(ValueError, match="norm_type"):
        nn.clip_grad_norm([layer], 1.0, norm_type=0)
    layer.grads["weight"] = np.zeros((3, 3), np.float32)     # a broken module
    with pytest.raises(fastrnn.ShapeError, match="gradient has shape"):
        nn.SGD([layer], lr=0.1)
