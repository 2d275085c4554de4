"""torch's own test samples for torch.nn.RNN (torch.testing._internal.common_modules' ModuleInfo:
constructor arguments, forward inputs with a no-batch-dim reference, PackedSequence inputs, and
error inputs) run against fastrnn.torch.RNN: forward (against the sample's reference and
torch.nn.RNN), backward, state_dict both ways, gradcheck with batched grads, gradgradcheck,
per-sample gradients through torch's ExpandedWeights, and every error sample.

torch.testing._internal needs the ``expecttest`` package (torch's own test dependency)."""
import io

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

from torch import nn  # noqa: E402
from torch.nn.utils._per_sample_grad import call_for_per_sample_grads  # noqa: E402
from torch.nn.utils.rnn import PackedSequence  # noqa: E402
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db  # noqa: E402

from fastrnn.torch import RNN  # noqa: E402

RNN_INFO = next(info for info in module_db if info.module_cls is nn.RNN)
# float32: torch.testing.assert_close's defaults (what torch's own module tests allow)
TOLERANCE = {torch.float32: dict(rtol=1.3e-6, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def samples(dtype, requires_grad=True):
    return RNN_INFO.module_inputs_func(RNN_INFO, device="cpu", dtype=dtype,
                                       requires_grad=requires_grad, training=True,
                                       with_packed_sequence=True)


def sample_id(sample):
    kwargs = sample.constructor_input.kwargs
    inputs = sample.forward_input.args
    kind = "packed" if isinstance(inputs[0], PackedSequence) else f"{len(inputs)} inputs"
    flags = "-".join(f"{k}={v}" for k, v in sorted(kwargs.items()) if k not in ("input_size",))
    return f"{flags}-{kind}"


SAMPLE_COUNT = len(samples(torch.float64))
INDICES = [pytest.param(i, id=sample_id(s)) for i, s in enumerate(samples(torch.float64))]


def modules_for(sample, dtype):
    """(fastrnn, torch) modules built from the sample's constructor input, equal parameters."""
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    torch.manual_seed(0)
    theirs = nn.RNN(*args, **kwargs).to(dtype)
    ours = RNN(*args, **kwargs).to(dtype)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def fresh_inputs(sample):
    """The sample's forward inputs as new leaves (so two modules don't share gradients)."""
    def fresh(value):
        if isinstance(value, PackedSequence):
            return value._replace(data=fresh(value.data))
        if isinstance(value, torch.Tensor):
            return value.detach().clone().requires_grad_(value.requires_grad)
        return value
    return [fresh(value) for value in sample.forward_input.args]


def tensors_of(values):
    return [v.data if isinstance(v, PackedSequence) else v for v in values]


def run(module, inputs):
    output, h_n = module(*inputs)
    return tensors_of([output])[0], h_n


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index", INDICES)
def test_forward_matches_reference_and_nn_rnn(index, dtype):
    sample = samples(dtype)[index]
    ours, theirs = modules_for(sample, dtype)
    output, h_n = run(ours, fresh_inputs(sample))
    expected_output, expected_h_n = run(theirs, fresh_inputs(sample))
    torch.testing.assert_close(output, expected_output, **TOLERANCE[dtype])
    torch.testing.assert_close(h_n, expected_h_n, **TOLERANCE[dtype])
    if not isinstance(sample.forward_input.args[0], PackedSequence):
        reference_output, reference_h_n = sample.reference_fn(ours, *fresh_inputs(sample))
        torch.testing.assert_close(output, reference_output, **TOLERANCE[dtype])
        torch.testing.assert_close(h_n, reference_h_n, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index", INDICES)
def test_backward_matches_nn_rnn(index, dtype):
    sample = samples(dtype)[index]
    gradients = []
    for module in modules_for(sample, dtype):
        inputs = fresh_inputs(sample)
        output, h_n = run(module, inputs)
        (output.pow(2).sum() + h_n.sum()).backward()
        gradients.append([t.grad for t in tensors_of(inputs)] +
                         [p.grad for p in module.parameters()])
    for ours, theirs in zip(*gradients):
        torch.testing.assert_close(ours, theirs, **TOLERANCE[dtype])


@pytest.mark.parametrize("index", INDICES)
def test_state_dict_loads_both_ways(index):
    sample = samples(torch.float32)[index]
    ours, theirs = modules_for(sample, torch.float32)
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    into_torch = nn.RNN(*args, **kwargs)
    into_torch.load_state_dict(torch.load(buffer), strict=True)
    into_ours = RNN(*args, **kwargs)
    into_ours.load_state_dict(theirs.state_dict(), strict=True)
    inputs = fresh_inputs(sample)
    torch.testing.assert_close(run(into_torch, inputs)[0], run(into_ours, inputs)[0])


def gradcheck_function(module, sample):
    """f(*tensors) running ``module`` on the sample with its inputs and parameters as tensors."""
    inputs = fresh_inputs(sample)
    names = [name for name, _ in module.named_parameters()]
    input_tensors = tensors_of(inputs)

    def function(*tensors):
        rebuilt = [value._replace(data=t) if isinstance(value, PackedSequence) else t
                   for value, t in zip(inputs, tensors)]
        params = dict(zip(names, tensors[len(inputs):]))
        output, h_n = torch.func.functional_call(module, params, tuple(rebuilt))
        return tensors_of([output])[0], h_n
    leaves = input_tensors + [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    return function, tuple(leaves)


@pytest.mark.parametrize("index", INDICES)
def test_gradcheck_with_batched_grads(index):
    sample = samples(torch.float64)[index]
    ours, _ = modules_for(sample, torch.float64)
    function, leaves = gradcheck_function(ours, sample)
    assert torch.autograd.gradcheck(function, leaves, check_batched_grad=True)


@pytest.mark.parametrize("index", INDICES[::8])
def test_gradgradcheck(index):
    """Every eighth sample: gradgradcheck runs the composite double backward many times."""
    sample = samples(torch.float64)[index]
    ours, _ = modules_for(sample, torch.float64)
    function, leaves = gradcheck_function(ours, sample)
    assert torch.autograd.gradgradcheck(function, leaves)


@pytest.mark.parametrize("index", [i for i in INDICES
                                   if "packed" not in i.id and "2 inputs" not in i.id])
def test_per_sample_gradients_through_expanded_weights_match_nn_rnn(index):
    """torch's per-sample gradients (call_for_per_sample_grads) on a batch of 3 made from the
    sample's unbatched input."""
    sample = samples(torch.float64, requires_grad=False)[index]
    batch_first = sample.constructor_input.kwargs["batch_first"]
    x = sample.forward_input.args[0]
    batch = torch.stack([x, 2 * x, x - 1], dim=0 if batch_first else 1)
    grad_samples = []
    for module in modules_for(sample, torch.float64):
        output, h_n = call_for_per_sample_grads(module, batch_size=3, batch_first=batch_first)(batch)
        (output.pow(2).sum() + h_n.sum()).backward()
        grad_samples.append([p.grad_sample for p in module.parameters()])
    for ours, theirs in zip(*grad_samples):
        assert ours.shape[0] == 3
        torch.testing.assert_close(ours, theirs, **TOLERANCE[torch.float64])


ERROR_SAMPLES = RNN_INFO.module_error_inputs_func(RNN_INFO, device="cpu", dtype=torch.float32,
                                                  requires_grad=False, training=True)


@pytest.mark.parametrize("index", range(len(ERROR_SAMPLES)))
def test_error_samples_raise_what_nn_rnn_raises(index):
    error = ERROR_SAMPLES[index]
    sample = error.module_error_input
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    with pytest.raises(error.error_type, match=error.error_regex):
        module = RNN(*args, **kwargs)
        assert error.error_on == ModuleErrorEnum.FORWARD_ERROR
        module(*sample.forward_input.args, **sample.forward_input.kwargs)


def test_torch_still_has_the_samples_this_file_runs():
    assert SAMPLE_COUNT == 64 and len(ERROR_SAMPLES) >= 10
