"""Watching the 'cuda' backend's launches in its tests (simulator and real GPU): which kernels
ran, which time-loop plans were chosen, and an H100's limits to plan against without one.

numba and the backend are imported inside the functions: these files are collected where
numba-cuda is missing.
"""


def spy_launches(monkeypatch):
    """The list every later kernel launch's kernel is appended to."""
    from fastrnn.backends import cuda as backend
    launches, launch = [], backend._launch
    monkeypatch.setattr(backend, "_launch", lambda kernel, *args, **kwargs: (
        launches.append(kernel), launch(kernel, *args, **kwargs))[1])
    return launches


def record_plans(monkeypatch):
    """The list the plans of all later time-loop launches are appended to."""
    from fastrnn.backends import cuda as backend
    plans, run = [], backend._run_recurrence
    monkeypatch.setattr(backend, "_run_recurrence", lambda *args: plans.append(run(*args)))
    return plans


def h100_limits():
    """The DeviceLimits of an H100 (132 SMs, 228 KiB of shared memory per SM), as the
    ``device_limits`` argument of cuda.plan_recurrence."""
    from fastrnn.backends import cuda as backend

    def cooperative_blocks(threads, shared_bytes):
        return 132 * min(2048 // threads, 32, 233472 // max(shared_bytes + 1024, 1))
    return lambda: backend.DeviceLimits(132, cooperative_blocks)
