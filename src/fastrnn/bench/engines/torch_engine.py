"""torch's engines: ``torch.nn.RNN/LSTM/GRU`` (CPU: MKL; CUDA: cuDNN) and ``fastrnn.torch``'s.

Why one module for both: they share torch's interface (constructor, state_dict, autograd,
``torch.no_grad``), so one runner serves both; only the class differs. Training calls
compute dL/dx too, as fastrnn's backward does. A ragged batch goes in as a torch user sends
it: ``pack_padded_sequence(x, lengths, enforce_sorted=False)`` and the output back through
``pad_packed_sequence``, both inside the timed call.
"""
from . import Runner, Skip, library_available
from ..agreement import state_results


def unavailable(variant):
    if not library_available("torch"):
        return "torch is not installed (pip install torch)"
    if variant == "torch-cuda":
        import torch
        if not torch.cuda.is_available():
            return "torch has no CUDA device here"
    if variant == "fastrnn.torch":
        try:
            import fastrnn.torch  # noqa: F401  (its own import errors say what is missing)
        except ImportError as exc:
            return f"fastrnn.torch cannot be imported ({exc})"
    return None


def prepare(variant, threads):
    import torch
    torch.set_num_threads(threads)
    return None


def _module_class(variant, cell):
    import torch
    name = cell.upper()
    if variant == "fastrnn.torch":
        import fastrnn.torch
        if not hasattr(fastrnn.torch, name):
            raise Skip(f"fastrnn.torch has no {name} in this version")
        return getattr(fastrnn.torch, name)
    return getattr(torch.nn, name)


def _packed_call(layer, lengths):
    """layer(x) -> (output, h_n), through a PackedSequence when there are lengths."""
    if lengths is None:
        return layer
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    def call(x):
        output, h_n = layer(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return pad_packed_sequence(output, total_length=x.shape[0])[0], h_n
    return call


def make_runner(variant, problem):
    import torch
    device = "cuda" if variant == "torch-cuda" else "cpu"
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    shape = problem.shape
    layer = _module_class(variant, shape.cell)(shape.I, shape.H, shape.layers,
                                               bidirectional=shape.bidirectional)
    layer.load_state_dict({name: torch.from_numpy(w) for name, w in problem.weights.items()})
    layer = layer.to(device)
    lengths = None if problem.lengths is None else torch.from_numpy(problem.lengths)
    call = _packed_call(layer, lengths)
    x = torch.from_numpy(problem.x).to(device)
    x_grad = x.clone().requires_grad_(True)
    grad_out = torch.from_numpy(problem.grad_out).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        call(x)
        sync()

    def forward_backward():
        x_grad.grad = None
        call(x_grad)[0].backward(grad_out)
        sync()

    def results():
        layer.zero_grad()
        forward_backward()
        with torch.no_grad():
            output, h_n = call(x)
        grads = {f"grad_{name}": p.grad for name, p in layer.named_parameters()}
        if any(grad is None for grad in grads.values()):
            raise Skip("left a parameter without a gradient")
        arrays = {"output": output, **state_results(h_n), "grad_input": x_grad.grad, **grads}
        return {name: t.detach().cpu().numpy() for name, t in arrays.items()}

    return Runner(forward, forward_backward, results, no_grad=torch.no_grad,
                  threads=torch.get_num_threads if device == "cpu" else (lambda: None))

