"""torch's own test samples for torch.nn.RNN, LSTM and GRU (torch.testing._internal.common_modules'
ModuleInfo: constructor arguments, forward inputs with a no-batch-dim reference, PackedSequence
inputs, and error inputs) run against fastrnn.torch's modules: forward (against the sample's
reference and torch's module), backward, state_dict both ways, gradcheck with batched grads,
gradgradcheck, per-sample gradients through torch's ExpandedWeights, and every error sample.
The costly derivative checks run on every sample of the RNN and a spread of the gated cells'
(``HEAVY_STRIDE``; their gradgradchecks are in test_torch_gated_transforms.py, on smaller
stacks), so that the file stays near a minute on two cores.

torch.testing._internal needs the ``expecttest`` package (torch's own test dependency)."""
import io

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

from torch import nn  # noqa: E402
from torch.nn.utils._per_sample_grad import call_for_per_sample_grads  # noqa: E402
from torch.nn.utils.rnn import PackedSequence  # noqa: E402
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db  # noqa: E402

import fastrnn.torch  # noqa: E402
from torch_helpers import state_members  # noqa: E402

CELLS = ("RNN", "LSTM", "GRU")
INFOS = {cell: next(info for info in module_db if info.module_cls is getattr(nn, cell))
         for cell in CELLS}
# float32: torch.testing.assert_close's defaults (what torch's own module tests allow)
TOLERANCE = {torch.float32: dict(rtol=1.3e-6, atol=1e-5),
             torch.float64: dict(rtol=1e-10, atol=1e-12)}
# the gated cells' float32 gradients chain more roundings per step (gate products, in another
# order than torch's kernels): a few ulps more, as in the other parity tests
GATED_GRADIENT_TOLERANCE = dict(rtol=1e-4, atol=1e-5)
# every n-th sample gets gradcheck, gradgradcheck, per-sample gradients: (n for the RNN, for
# the gated cells; None: none of theirs)
HEAVY_STRIDE = {"gradcheck": (1, 8), "gradgradcheck": (8, None), "per_sample": (1, 4)}


def samples(cell, dtype, requires_grad=True):
    info = INFOS[cell]
    return info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=requires_grad,
                                   training=True, with_packed_sequence=True)


def sample_id(cell, sample):
    kwargs = sample.constructor_input.kwargs
    inputs = sample.forward_input.args
    kind = "packed" if isinstance(inputs[0], PackedSequence) else f"{len(inputs)} inputs"
    flags = "-".join(f"{k}={v}" for k, v in sorted(kwargs.items()) if k not in ("input_size",))
    return f"{cell}-{flags}-{kind}"


SAMPLE_COUNTS = {cell: len(samples(cell, torch.float64)) for cell in CELLS}
INDICES = [pytest.param(cell, i, id=sample_id(cell, s))
           for cell in CELLS for i, s in enumerate(samples(cell, torch.float64))]


def spread(check):
    """The samples ``check`` runs on: every n-th of each cell (HEAVY_STRIDE)."""
    strides = dict(zip(("RNN", "gated"), HEAVY_STRIDE[check]))
    chosen = []
    for param in INDICES:
        cell, index = param.values
        stride = strides["RNN" if cell == "RNN" else "gated"]
        if stride is not None and index % stride == 0:
            chosen.append(param)
    return chosen


def modules_for(cell, sample, dtype):
    """(fastrnn, torch) modules built from the sample's constructor input, equal parameters."""
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    torch.manual_seed(0)
    theirs = getattr(nn, cell)(*args, **kwargs).to(dtype)
    ours = getattr(fastrnn.torch, cell)(*args, **kwargs).to(dtype)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def fresh(value):
    """A sample's input (a tensor, PackedSequence or LSTM's pair) as new leaves (so two
    modules don't share gradients)."""
    if isinstance(value, PackedSequence):
        return value._replace(data=fresh(value.data))
    if isinstance(value, tuple):
        return tuple(map(fresh, value))
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    return value


def fresh_inputs(sample):
    return [fresh(value) for value in sample.forward_input.args]


def tensors_of(values):
    """The tensors of forward inputs, in order (packed data; both members of a pair)."""
    tensors = []
    for value in values:
        if isinstance(value, PackedSequence):
            tensors.append(value.data)
        elif isinstance(value, tuple):
            tensors.extend(value)
        else:
            tensors.append(value)
    return tensors


def rebuilt(values, tensors):
    """``values`` (forward inputs) with their tensors replaced, in tensors_of's order."""
    tensors, result = list(tensors), []
    for value in values:
        if isinstance(value, PackedSequence):
            result.append(value._replace(data=tensors.pop(0)))
        elif isinstance(value, tuple):
            result.append(tuple(tensors.pop(0) for _ in value))
        else:
            result.append(tensors.pop(0))
    return result


def run(module, inputs):
    """(output tensor, *final states) of one forward."""
    output, final = module(*inputs)
    return (tensors_of([output])[0], *state_members(final))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cell,index", INDICES)
def test_forward_matches_reference_and_torch(cell, index, dtype):
    sample = samples(cell, dtype)[index]
    ours, theirs = modules_for(cell, sample, dtype)
    results = run(ours, fresh_inputs(sample))
    for a, b in zip(results, run(theirs, fresh_inputs(sample)), strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype])
    if not isinstance(sample.forward_input.args[0], PackedSequence):
        output, final = sample.reference_fn(ours, *fresh_inputs(sample))
        for a, b in zip(results, (output, *state_members(final)), strict=True):
            torch.testing.assert_close(a, b, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cell,index", INDICES)
def test_backward_matches_torch(cell, index, dtype):
    sample = samples(cell, dtype)[index]
    gradients = []
    for module in modules_for(cell, sample, dtype):
        inputs = fresh_inputs(sample)
        output, *finals = run(module, inputs)
        (output.pow(2).sum() + sum(s.sum() for s in finals)).backward()
        gradients.append([t.grad for t in tensors_of(inputs)] +
                         [p.grad for p in module.parameters()])
    tolerance = TOLERANCE[dtype]
    if cell != "RNN" and dtype == torch.float32:
        tolerance = GATED_GRADIENT_TOLERANCE
    for ours, theirs in zip(*gradients):
        torch.testing.assert_close(ours, theirs, **tolerance)


@pytest.mark.parametrize("cell,index", INDICES)
def test_state_dict_loads_both_ways(cell, index):
    sample = samples(cell, torch.float32)[index]
    ours, theirs = modules_for(cell, sample, torch.float32)
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    into_torch = getattr(nn, cell)(*args, **kwargs)
    into_torch.load_state_dict(torch.load(buffer), strict=True)
    into_ours = getattr(fastrnn.torch, cell)(*args, **kwargs)
    into_ours.load_state_dict(theirs.state_dict(), strict=True)
    inputs = fresh_inputs(sample)
    torch.testing.assert_close(run(into_torch, inputs)[0], run(into_ours, inputs)[0])


def gradcheck_function(module, sample):
    """f(*tensors) running ``module`` on the sample with its inputs and parameters as tensors."""
    inputs = fresh_inputs(sample)
    names = [name for name, _ in module.named_parameters()]
    count = len(tensors_of(inputs))

    def function(*tensors):
        params = dict(zip(names, tensors[count:]))
        return run(lambda *values: torch.func.functional_call(module, params, values),
                   rebuilt(inputs, tensors[:count]))
    leaves = tensors_of(inputs) + [p.detach().clone().requires_grad_(True)
                                   for p in module.parameters()]
    return function, tuple(leaves)


@pytest.mark.parametrize("cell,index", spread("gradcheck"))
def test_gradcheck_with_batched_grads(cell, index):
    sample = samples(cell, torch.float64)[index]
    ours, _ = modules_for(cell, sample, torch.float64)
    function, leaves = gradcheck_function(ours, sample)
    assert torch.autograd.gradcheck(function, leaves, check_batched_grad=True)


@pytest.mark.parametrize("cell,index", spread("gradgradcheck"))
def test_gradgradcheck(cell, index):
    """gradgradcheck runs the composite double backward many times: a spread of samples."""
    sample = samples(cell, torch.float64)[index]
    ours, _ = modules_for(cell, sample, torch.float64)
    function, leaves = gradcheck_function(ours, sample)
    assert torch.autograd.gradgradcheck(function, leaves)


@pytest.mark.parametrize("cell,index", [p for p in spread("per_sample")
                                        if "packed" not in p.id and "2 inputs" not in p.id])
def test_per_sample_gradients_through_expanded_weights_match_torch(cell, index):
    """torch's per-sample gradients (call_for_per_sample_grads) on a batch of 3 made from the
    sample's unbatched input."""
    sample = samples(cell, torch.float64, requires_grad=False)[index]
    batch_first = sample.constructor_input.kwargs["batch_first"]
    x = sample.forward_input.args[0]
    batch = torch.stack([x, 2 * x, x - 1], dim=0 if batch_first else 1)
    grad_samples = []
    for module in modules_for(cell, sample, torch.float64):
        output, *finals = run(call_for_per_sample_grads(module, batch_size=3,
                                                        batch_first=batch_first), [batch])
        (output.pow(2).sum() + sum(s.sum() for s in finals)).backward()
        grad_samples.append([p.grad_sample for p in module.parameters()])
    for ours, theirs in zip(*grad_samples):
        assert ours.shape[0] == 3
        torch.testing.assert_close(ours, theirs, **TOLERANCE[torch.float64])


def error_samples(cell):
    info = INFOS[cell]
    return info.module_error_inputs_func(info, device="cpu", dtype=torch.float32,
                                         requires_grad=False, training=True)


ERROR_SAMPLES = {cell: error_samples(cell) for cell in CELLS}


@pytest.mark.parametrize("cell,index", [(cell, i) for cell in CELLS
                                        for i in range(len(ERROR_SAMPLES[cell]))])
def test_error_samples_raise_what_torch_raises(cell, index):
    error = ERROR_SAMPLES[cell][index]
    sample = error.module_error_input
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    with pytest.raises(error.error_type, match=error.error_regex):
        module = getattr(fastrnn.torch, cell)(*args, **kwargs)
        assert error.error_on == ModuleErrorEnum.FORWARD_ERROR
        module(*sample.forward_input.args, **sample.forward_input.kwargs)


def test_torch_still_has_the_samples_this_file_runs():
    assert SAMPLE_COUNTS == {"RNN": 64, "LSTM": 32, "GRU": 32}
    assert all(len(ERROR_SAMPLES[cell]) >= 10 for cell in CELLS)
