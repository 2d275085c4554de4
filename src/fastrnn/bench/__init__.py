"""``python -m fastrnn bench``: fastrnn against the limit of the machine and against its peers.

What it reports, per shape: forward and forward + backward time of every engine (fastrnn,
fastrnn.torch, torch.nn.RNN, ONNX Runtime's RNN operator, JAX's lax.scan, when installed),
each engine's time relative to fastrnn's, and its share of the LIMIT: the time of just the
matrix products the shape needs, measured in the same run on the same BLAS and threads
(limit.py says exactly how). A latency section times single calls at T=1 and T=16 (B=1).

Why one module per job: options (cli), shapes and their products (shapes), one problem per
shape and the check that each engine solves it (agreement), the engines (engines/, one module
per family, each importing its library only when asked), the limit (limit), timing (timing),
the run that ties them together (run), the machine description (machine), the formats
(report), the chart (plot) and the progress bar (progress). Importing this package imports
none of the peers; ``fastrnn`` itself never imports this package.
"""
