"""fastrnn.torch.RNN under torch's tracers: torch.compile (fullgraph), torch.export (and its
saved programs), jit.trace, meta tensors and FakeTensor; and the operators under
torch.library.opcheck. Results must equal eager ones."""
import io

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

from fastrnn.torch import RNN, ops  # noqa: E402

EXACT = dict(rtol=0, atol=0)


def compiled_training_step(module, x):
    """(output, h_n, parameter grads) of one forward + backward."""
    module.zero_grad()
    output, h_n = module(x)
    (output.pow(2).sum() + h_n.sum()).backward()
    return [output.detach(), h_n.detach()] + [p.grad.clone() for p in module.parameters()]


def test_compile_fullgraph_forward_and_backward_equal_eager():
    """The default backend (inductor), fullgraph=True. dynamo refuses every torch.nn.RNN
    instance unless torch._dynamo.config.allow_rnn is set, and fastrnn.torch.RNN is one."""
    torch.manual_seed(0)
    module = RNN(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 5, 3)
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(module, fullgraph=True)
        got = compiled_training_step(compiled, x)
        with torch.no_grad():
            got_inference = compiled(x)[0]
    expected = compiled_training_step(module, x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, **EXACT)
    torch.testing.assert_close(got_inference, expected[0], **EXACT)


def test_compile_without_allow_rnn_says_how_to_enable_it():
    compiled = torch.compile(RNN(3, 4), fullgraph=True)
    with pytest.raises(Exception, match="allow_rnn"):
        compiled(torch.randn(2, 1, 3))


def test_compile_of_the_operator_call_with_packed_input():
    """Packed input compiles when the PackedSequence is made outside the compiled function
    (its batch_sizes are data); pack_padded_sequence itself is data-dependent."""
    torch.manual_seed(1)
    module = RNN(3, 4, bidirectional=True)
    x = torch.randn(4, 3, 3)
    packed = pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=False)

    def run(packed):
        output, h_n = module(packed)
        return output.data, h_n
    with torch._dynamo.config.patch(allow_rnn=True):
        got = torch.compile(run, backend="aot_eager", fullgraph=True)(packed)
    for a, b in zip(got, run(packed)):
        torch.testing.assert_close(a, b, **EXACT)


def test_export_save_load_round_trip_equals_eager():
    torch.manual_seed(2)
    module = RNN(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    x, hx = torch.randn(2, 5, 3), torch.randn(4, 2, 4)
    program = torch.export.export(module, (x, hx))
    assert "torch.ops.fastrnn.rnn_forward" in program.graph_module.code
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    x2, hx2 = torch.randn(2, 5, 3), torch.randn(4, 2, 4)
    for a, b in zip(loaded(x2, hx2), module(x2, hx2)):
        torch.testing.assert_close(a, b, **EXACT)


def test_export_with_a_dynamic_batch():
    torch.manual_seed(3)
    module = RNN(3, 4)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (torch.randn(5, 2, 3),),
                                  dynamic_shapes=({1: batch},))
    x = torch.randn(5, 7, 3)
    torch.testing.assert_close(program.module()(x)[0], module(x)[0], **EXACT)


@pytest.mark.parametrize("grad_enabled", [False, True])
def test_jit_trace_follows_its_input(grad_enabled):
    """Under no_grad a traced module used to return a constant (the trace did not see the op)."""
    torch.manual_seed(4)
    module = RNN(3, 4, num_layers=2)
    with torch.set_grad_enabled(grad_enabled):
        traced = torch.jit.trace(module, (torch.randn(5, 2, 3),))
    x = torch.randn(5, 2, 3)
    for a, b in zip(traced(x), module(x)):
        torch.testing.assert_close(a, b, **EXACT)
    assert "fastrnn" in str(traced.graph)


def test_meta_module_gives_shapes():
    module = RNN(3, 4, num_layers=2, bidirectional=True, batch_first=True, device="meta")
    output, h_n = module(torch.empty(2, 5, 3, device="meta"))
    assert output.device.type == "meta" and h_n.device.type == "meta"
    assert output.shape == (2, 5, 8) and h_n.shape == (4, 2, 4)


def test_fake_tensor_forward_and_backward_give_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        module = RNN(3, 4, num_layers=2)
        x = torch.empty(5, 2, 3, requires_grad=True)
        output, h_n = module(x)
        output.sum().backward()
        assert output.shape == (5, 2, 4) and h_n.shape == (2, 2, 4)
        assert x.grad.shape == x.shape and module.weight_hh_l1.grad.shape == (4, 4)


OPCHECK_CASES = {   # name: (mode, input shape, batch_sizes or None, layers, bidirectional, masks)
    "equal lengths": ("RNN_TANH", (3, 2, 3), None, 1, False, False),
    "packed, 2 layers, bidirectional, dropout": ("RNN_TANH", (6, 3), [3, 2, 1], 2, True, True),
    "LSTM, packed, 2 layers, bidirectional, dropout": ("LSTM", (6, 3), [3, 2, 1], 2, True, True),
    "GRU, equal lengths, 2 layers": ("GRU", (3, 2, 3), None, 2, False, False),
}


@pytest.mark.parametrize("case", sorted(OPCHECK_CASES))
def test_operators_pass_opcheck(case):
    """torch.library.opcheck: schema, fake implementation, autograd registration, AOT dispatch."""
    mode, x_shape, sizes, layers, bidirectional, with_masks = OPCHECK_CASES[case]
    generator = torch.Generator().manual_seed(5)
    randn = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)
    module = getattr(nn, mode.split("_")[0])(3, 4, num_layers=layers, bidirectional=bidirectional,
                                             dtype=torch.float64)
    directions = 2 if bidirectional else 1
    batch_sizes = None if sizes is None else torch.tensor(sizes)
    batch = x_shape[1] if sizes is None else sizes[0]
    x, hx = randn(*x_shape), randn(layers * directions, batch, 4)
    cx = randn(*hx.shape) if mode == "LSTM" else ops.no_cell_state(hx)
    weights = ops.flatten_weights(list(module.parameters())).detach()
    masks = randn(layers - 1, *x_shape[:-1], 4 * directions) if with_masks else None
    config = (mode, layers, bidirectional, True, "auto")
    forward_args = (x, batch_sizes, hx, cx, weights, masks, *config, True)
    torch.library.opcheck(torch.ops.fastrnn.rnn_forward.default, forward_args)
    output, h_n, c_n, layer_outputs, gates = torch.ops.fastrnn.rnn_forward(*forward_args)
    backward_args = (x, batch_sizes, hx, cx, weights, masks, output, layer_outputs, gates,
                     randn(*output.shape), randn(*h_n.shape), randn(*c_n.shape), *config, True)
    torch.library.opcheck(torch.ops.fastrnn.rnn_backward.default, backward_args)
