# Declarations of thread_team.h: rounds of work shared by a team of threads living for one call.
cdef extern from "thread_team.h" nogil:
    ctypedef void (*team_work_fn)(const void* job, Py_ssize_t round, Py_ssize_t begin,
                                  Py_ssize_t end)
    void run_team(int n_threads, Py_ssize_t n_items, Py_ssize_t n_rounds, team_work_fn work,
                  const void* job)
