"""ONNX Runtime's RNN, LSTM and GRU operators: the inference engine a deployment would pick.

Why the graph looks like this: one ONNX ``RNN`` / ``LSTM`` / ``GRU`` node per layer, as an
exporter writes it (direction "forward" or "bidirectional", torch's two biases side by side in
``B``, weights as initializers, the gate blocks reordered from torch's order to ONNX's, GRU
with ``linear_before_reset=1``: torch's b_hn inside r * (...)). The node's output is
[T, D, B, H]; between layers it is brought to [T, B, D*H] (a Squeeze when D = 1, Transpose +
Reshape when D = 2), and the layers' final states are concatenated into h_n [L*D, B, H] (and
LSTM's c_n). A ragged batch feeds its lengths as every node's ``sequence_lens``. ONNX Runtime
has no training here: forward only. Threads: ``intra_op_num_threads`` = the bench's count, one
inter-op thread, sequential execution.
"""
import numpy as np

from . import Runner, library_available

OPSET = 17
_settings = {"threads": 1}
# Where each of ONNX's gate blocks sits in torch's weights: LSTM torch [i f g o] -> ONNX
# [i o f c]; GRU torch [r z n] -> ONNX [z r h].
GATE_ORDER = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}


def unavailable(variant):
    missing = [name for name in ("onnx", "onnxruntime") if not library_available(name)]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install onnx onnxruntime)"
    return None


def prepare(variant, threads):
    import onnxruntime  # noqa: F401  (loaded now, before the bench limits every BLAS)
    _settings["threads"] = threads
    return None


def _onnx_gates(array, cell):
    """torch's gate blocks (rows) in ONNX's order."""
    blocks = np.split(array, len(GATE_ORDER[cell]))
    return np.concatenate([blocks[i] for i in GATE_ORDER[cell]])


def _layer_weights(weights, layer, shape):
    """ONNX's W [D, G*H, I_l], R [D, G*H, H] and B [D, 2*G*H] from torch's names."""
    suffixes = [f"l{layer}", f"l{layer}_reverse"][:shape.directions]
    reorder = lambda key, s: _onnx_gates(weights[f"{key}_{s}"], shape.cell)
    stack = lambda key: np.stack([reorder(key, s) for s in suffixes])
    biases = np.stack([np.concatenate([reorder("bias_ih", s), reorder("bias_hh", s)])
                       for s in suffixes])
    return stack("weight_ih"), stack("weight_hh"), biases


def _state_names(shape):
    return ["h_n", "c_n"] if shape.cell == "lstm" else ["h_n"]


def build_model(shape, weights, ragged=False):
    """The ONNX model: input ``x`` [T, B, I] (and ``lengths`` [B] int32 when ``ragged``) ->
    ``output`` [T, B, D*H], ``h_n`` [L*D, B, H] (and ``c_n`` for LSTM)."""
    from onnx import TensorProto, helper, numpy_helper
    D, nodes, initializers = shape.directions, [], []
    states = _state_names(shape)
    finals = {name: [] for name in states}
    constant = lambda name, array: initializers.append(numpy_helper.from_array(array, name))
    if D == 1:
        constant("squeeze_axes", np.array([1], dtype=np.int64))
    else:
        constant("merged_shape", np.array([0, 0, -1], dtype=np.int64))
    extra = {"linear_before_reset": 1} if shape.cell == "gru" else {}
    layer_input = "x"
    for layer in range(shape.layers):
        for name, array in zip("WRB", _layer_weights(weights, layer, shape)):
            constant(f"{name}{layer}", array)
        y = f"Y{layer}"
        node_states = [f"Y_{name}{layer}" for name in states]
        nodes.append(helper.make_node(
            shape.cell.upper(), [layer_input, f"W{layer}", f"R{layer}", f"B{layer}"]
            + (["lengths"] if ragged else []), [y] + node_states, hidden_size=shape.H,
            direction="bidirectional" if D == 2 else "forward", **extra))
        layer_input = f"out{layer}"
        if D == 1:
            nodes.append(helper.make_node("Squeeze", [y, "squeeze_axes"], [layer_input]))
        else:
            nodes.append(helper.make_node("Transpose", [y], [f"{y}_t"], perm=[0, 2, 1, 3]))
            nodes.append(helper.make_node("Reshape", [f"{y}_t", "merged_shape"], [layer_input]))
        for name, node_state in zip(states, node_states):
            finals[name].append(node_state)
    nodes.append(helper.make_node("Identity", [layer_input], ["output"]))
    for name in states:
        nodes.append(helper.make_node("Concat", finals[name], [name], axis=0))
    tensor = lambda name, dims, kind=TensorProto.FLOAT: helper.make_tensor_value_info(
        name, kind, dims)
    inputs = [tensor("x", [shape.T, shape.B, shape.I])]
    if ragged:
        inputs.append(tensor("lengths", [shape.B], TensorProto.INT32))
    graph = helper.make_graph(
        nodes, f"fastrnn_bench_{shape.cell}", inputs,
        [tensor("output", [shape.T, shape.B, D * shape.H])]
        + [tensor(name, [shape.layers * D, shape.B, shape.H]) for name in states],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8                   # what opset 17 needs; older runtimes read it too
    return model


def _session(model):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _settings["threads"]
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3             # errors only: its warnings would cut the table
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def make_runner(variant, problem):
    ragged = problem.lengths is not None
    session = _session(build_model(problem.shape, problem.weights, ragged))
    feed = {"x": problem.x}
    if ragged:
        feed["lengths"] = problem.lengths.astype(np.int32)
    names = ["output"] + _state_names(problem.shape)

    def forward():
        session.run(None, feed)

    def results():
        return dict(zip(names, session.run(names, feed)))

    return Runner(forward, None, results,
                  threads=lambda: session.get_session_options().intra_op_num_threads)
