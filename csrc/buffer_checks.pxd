# Checks of every array a compiled entry point reads or writes, once per call, before any
# kernel runs; for every cell's kernels.
#
# Why in the compiled module and not only in Python: the kernels trust the pointers and sizes
# they are given, so a wrong array (a wrong shape, a broadcast view with zero strides, a
# read-only or byte-swapped buffer, an integer array) would make them read or write out of
# bounds. Here every array is checked against what the kernel will do with it (shape, dtype,
# byte order, alignment, strides, writeability), so that even a direct caller of the
# compiled module gets a ValueError or TypeError naming what was expected and what was given.
# The checks read a few fields of each array header through NumPy's C API: they cost well
# under a microsecond per array, nothing per step.
cimport numpy as cnp
from libc.limits cimport INT_MAX
from libc.stdint cimport int64_t


cdef struct rows_view:     # a checked float array: rows x cols, row i at data + i * ld elements
    char* data
    Py_ssize_t rows, cols, ld


cdef inline str type_text(int typenum):
    """The name of a NumPy type number, for messages."""
    return str(cnp.PyArray_DescrFromType(typenum))


cdef inline cnp.ndarray checked_array(object obj, str name, int typenum):
    """``obj`` as an ndarray of ``typenum`` in the machine's byte order, aligned."""
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{name} must be a NumPy array of {type_text(typenum)}, got "
                        f"{type(obj).__name__}")
    a = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(a) != typenum:
        raise TypeError(f"{name} must be an array of {type_text(typenum)}, got "
                        f"{(<object>a).dtype}")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise ValueError(f"{name} must be in the machine's byte order, got dtype "
                         f"{(<object>a).dtype.str!r}; convert it with "
                         f".astype({(<object>a).dtype.name!r})")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{name} must be aligned to its {(<object>a).itemsize}-byte elements; "
                         "np.ascontiguousarray makes an aligned copy")
    return a


cdef inline int float_type(object x, str name) except -1:
    """NPY_FLOAT32 or NPY_FLOAT64: the dtype of the call, from its first array."""
    if not cnp.PyArray_Check(x):
        raise TypeError(f"{name} must be a NumPy array of float32 or float64, got "
                        f"{type(x).__name__}")
    if cnp.PyArray_TYPE(<cnp.ndarray>x) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        raise TypeError(f"{name} must be an array of float32 or float64, got "
                        f"{(<cnp.ndarray>x).dtype}")
    return cnp.PyArray_TYPE(<cnp.ndarray>x)


cdef inline str shape_text(Py_ssize_t rows, Py_ssize_t cols, int ndim):
    if ndim == 1:
        return f"({cols},)"
    return f"({'?' if rows < 0 else rows}, {'?' if cols < 0 else cols})"


cdef inline int take(object obj, str name, int typenum, int ndim, Py_ssize_t rows,
                     Py_ssize_t cols, str dims, bint dense, bint writeable,
                     rows_view* view) except -1:
    """Checks a float array of ``ndim`` (1 or 2) dimensions and describes it in ``view``.

    shape: (rows, cols), or (cols,) for ndim 1; a negative size is read from the array.
    dims: the shape in letters for messages, e.g. "(N, H)".
    dense: rows exactly cols apart (C-contiguous), else rows evenly spaced at least cols apart
    (e.g. one half of a bidirectional [N, 2H] buffer); the last axis is always contiguous.
    """
    cdef cnp.ndarray a = checked_array(obj, name, typenum)
    cdef object described = a             # for messages: its Python attributes
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(a)
    cdef cnp.npy_intp* shape = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp* strides = cnp.PyArray_STRIDES(a)
    cdef Py_ssize_t row_stride
    if cnp.PyArray_NDIM(a) != ndim:
        raise ValueError(f"{name} must be {ndim}-D {dims}, got shape {(<object>a).shape}")
    if ndim == 1:
        rows, row_stride = 1, 0
    else:
        rows = shape[0] if rows < 0 else rows
        row_stride = strides[0]
    cols = shape[ndim - 1] if cols < 0 else cols
    if (ndim == 2 and shape[0] != rows) or shape[ndim - 1] != cols:
        raise ValueError(f"Expected {name} to have shape {dims} = {shape_text(rows, cols, ndim)}, "
                         f"got {(<object>a).shape}")
    if cols > 1 and rows > 0 and strides[ndim - 1] != item:    # (no element: any strides)
        raise ValueError(f"{name} must have a contiguous last axis ({item}-byte steps), got "
                         f"strides {described.strides}; np.ascontiguousarray makes a contiguous "
                         "copy")
    view.ld = max(cols, 1)
    if rows > 1 and cols > 0:
        if (row_stride % item != 0 or row_stride < cols * item
                or (dense and row_stride != cols * item)):
            raise ValueError(
                f"{name} must have {'C-contiguous' if dense else 'evenly spaced, non-overlapping'}"
                f" rows of {cols} elements ({'exactly' if dense else 'at least'} {cols * item} "
                f"bytes apart), got strides {described.strides}; np.ascontiguousarray makes "
                "such a copy")
        view.ld = row_stride // item
    if view.ld > INT_MAX:
        raise ValueError(f"rows of {name} are {view.ld} elements apart, more than the BLAS can "
                         f"address ({INT_MAX})")
    if writeable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name} is read-only, but the kernel writes its result into it")
    view.data, view.rows, view.cols = <char*>cnp.PyArray_DATA(a), rows, cols
    return 0


cdef inline char* take_optional_vector(object obj, str name, int typenum, Py_ssize_t n,
                                       str dims, bint writeable) except? NULL:
    """The data of a contiguous [n] float array, or NULL for None (dims: e.g. "(4H,)")."""
    cdef rows_view view
    if obj is None:
        return NULL
    take(obj, name, typenum, 1, 1, n, dims, True, writeable, &view)
    return view.data


cdef inline const int64_t* take_batch_sizes(object obj, Py_ssize_t N, Py_ssize_t B,
                                            Py_ssize_t* T, bint* equal) except? NULL:
    """The checked batch_sizes [T] (int64, non-increasing, every entry >= 1, batch_sizes[0] == B,
    sum N); T and whether every entry is B (an equal-length batch) come back through the
    pointers."""
    cdef cnp.ndarray a = checked_array(obj, "batch_sizes", cnp.NPY_INT64)
    cdef const int64_t* sizes
    cdef Py_ssize_t t, total = 0, previous
    if cnp.PyArray_NDIM(a) != 1:
        raise ValueError(f"batch_sizes must be 1-D [T], got shape {(<object>a).shape}")
    T[0] = cnp.PyArray_DIMS(a)[0]
    if T[0] > 1 and cnp.PyArray_STRIDES(a)[0] != 8:
        raise ValueError(f"batch_sizes must be contiguous, got strides {(<object>a).strides}")
    sizes = <const int64_t*>cnp.PyArray_DATA(a)
    equal[0] = True
    if T[0] == 0:
        if N != 0 or B != 0:
            raise ValueError(f"batch_sizes is empty, but x has {N} rows and h0 {B}")
        return sizes
    if sizes[0] != B:
        raise ValueError(f"batch_sizes[0] must be the batch size B = h0.shape[0] = {B}, got "
                         f"{sizes[0]}")
    previous = B
    for t in range(T[0]):
        if sizes[t] < 1 or sizes[t] > previous:
            raise ValueError(f"batch_sizes must be non-increasing and >= 1 (sequences sorted by "
                             f"decreasing length), got {sizes[t]} at step {t} after {previous}")
        if sizes[t] > N - total:
            raise ValueError(f"batch_sizes must sum to the number of rows of x, N = {N}; it "
                             f"exceeds N at step {t}")
        total += sizes[t]
        equal[0] = equal[0] and sizes[t] == B
        previous = sizes[t]
    if total != N:
        raise ValueError(f"batch_sizes must sum to the number of rows of x, N = {N}, got {total}")
    return sizes
