"""ONNX Runtime's RNN operator: the inference engine a deployment would pick.

Why the graph looks like this: one ONNX ``RNN`` node per layer, as an exporter writes it
(direction "forward" or "bidirectional", torch's two biases side by side in ``B``, weights as
initializers). The node's output is [T, D, B, H]; between layers it is brought to [T, B, D*H]
(a Squeeze when D = 1, Transpose + Reshape when D = 2), and the layers' final states are
concatenated into h_n [L*D, B, H]. ONNX Runtime has no training here: forward only.
Threads: ``intra_op_num_threads`` = the bench's count, one inter-op thread, sequential
execution.
"""
import numpy as np

from . import Runner, library_available

OPSET = 17
_settings = {"threads": 1}


def unavailable(variant):
    missing = [name for name in ("onnx", "onnxruntime") if not library_available(name)]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install onnx onnxruntime)"
    return None


def prepare(variant, threads):
    import onnxruntime  # noqa: F401  (loaded now, before the bench limits every BLAS)
    _settings["threads"] = threads
    return None


def _layer_weights(weights, layer, directions):
    """ONNX's W [D, H, I_l], R [D, H, H] and B [D, 2H] from torch's names."""
    suffixes = [f"l{layer}", f"l{layer}_reverse"][:directions]
    stack = lambda key: np.stack([weights[f"{key}_{s}"] for s in suffixes])
    biases = np.stack([np.concatenate([weights[f"bias_ih_{s}"], weights[f"bias_hh_{s}"]])
                       for s in suffixes])
    return stack("weight_ih"), stack("weight_hh"), biases


def build_model(shape, weights):
    """The ONNX model: input ``x`` [T, B, I] -> ``output`` [T, B, D*H], ``h_n`` [L*D, B, H]."""
    from onnx import TensorProto, helper, numpy_helper
    D, nodes, initializers, finals = shape.directions, [], [], []
    constant = lambda name, array: initializers.append(numpy_helper.from_array(array, name))
    if D == 1:
        constant("squeeze_axes", np.array([1], dtype=np.int64))
    else:
        constant("merged_shape", np.array([0, 0, -1], dtype=np.int64))
    layer_input = "x"
    for layer in range(shape.layers):
        for name, array in zip("WRB", _layer_weights(weights, layer, D)):
            constant(f"{name}{layer}", array)
        y, y_h = f"Y{layer}", f"Y_h{layer}"
        nodes.append(helper.make_node(
            "RNN", [layer_input, f"W{layer}", f"R{layer}", f"B{layer}"], [y, y_h],
            hidden_size=shape.H, direction="bidirectional" if D == 2 else "forward"))
        layer_input = f"out{layer}"
        if D == 1:
            nodes.append(helper.make_node("Squeeze", [y, "squeeze_axes"], [layer_input]))
        else:
            nodes.append(helper.make_node("Transpose", [y], [f"{y}_t"], perm=[0, 2, 1, 3]))
            nodes.append(helper.make_node("Reshape", [f"{y}_t", "merged_shape"], [layer_input]))
        finals.append(y_h)
    nodes.append(helper.make_node("Identity", [layer_input], ["output"]))
    nodes.append(helper.make_node("Concat", finals, ["h_n"], axis=0))
    tensor = lambda name, dims: helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
    graph = helper.make_graph(
        nodes, "fastrnn_bench_rnn", [tensor("x", [shape.T, shape.B, shape.I])],
        [tensor("output", [shape.T, shape.B, D * shape.H]),
         tensor("h_n", [shape.layers * D, shape.B, shape.H])], initializers)
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
    session = _session(build_model(problem.shape, problem.weights))
    feed = {"x": problem.x}

    def forward():
        session.run(None, feed)

    def results():
        output, h_n = session.run(["output", "h_n"], feed)
        return {"output": output, "h_n": h_n}

    return Runner(forward, None, results,
                  threads=lambda: session.get_session_options().intra_op_num_threads)
