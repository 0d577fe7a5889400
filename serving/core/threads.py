"""onnxruntime's sessions and their threads: explicit, and one default for every surface.

A session runs on the thread that calls it (one intra-op thread); a runtime's threads score
the chunks of chunk_bounds side by side (serving.core.runtime.VAEGraphs.map_chunks)."""

import os

import onnxruntime as ort

# K·B rows per onnxruntime call at most: bounds memory for any request. Each of the runtime's
# threads holds one such call's arrays; at 1 << 14, 2 threads raised vae score's peak RSS from
# 300 MB to 460 MB, at 1 << 13 to 390 MB, and int8 scored faster (its activations stay in cache).
SAMPLE_ROWS = 1 << 13
SPLIT_ROWS = 1 << 10  # K·B rows from which a request is shared among the runtime's threads


def session_options() -> ort.SessionOptions:
    """One thread, explicitly: by default onnxruntime sizes itself to the host, not the
    container. Splitting each call among threads left them waiting on the caller's numpy
    work between calls, and 2 threads that spin there scored fewer rows/s than 1."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Batches of every size come through (merged requests, chunks): a memory pattern cached
    # per input shape and an arena that keeps its high-water mark made a serving worker's
    # memory grow with each new size. Plain allocations are freed after every call.
    options.enable_mem_pattern = False
    options.enable_cpu_mem_arena = False
    return options


def default_threads(workers: int = 1) -> int:
    """Threads per runtime, the one default of every surface: VAE_ORT_THREADS,
    else the CPUs this process may use shared among `workers` processes (so that workers ×
    threads never exceed them)."""
    if "VAE_ORT_THREADS" in os.environ:
        return int(os.environ["VAE_ORT_THREADS"])
    return max(1, int(container_cpus()) // workers)


def container_cpus() -> float:
    """CPUs this process may use: the cgroup v2 quota when one is set, else its CPU affinity
    (onnxruntime by default sizes itself to the host, not the container)."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    return len(os.sched_getaffinity(0))


def chunk_bounds(rows: int, n_samples: int, threads: int) -> list[tuple[int, int]]:
    """Row ranges of at most SAMPLE_ROWS // K rows (K·B rows per onnxruntime call at most).
    Rows that would fill fewer chunks than there are threads are shared evenly among the
    threads instead, once they are SPLIT_ROWS decoder rows or more."""
    size = max(1, SAMPLE_ROWS // max(1, n_samples))
    if threads > 1 and rows < size * threads and rows * n_samples >= SPLIT_ROWS:
        size = -(-rows // threads)
    return [(lo, min(lo + size, rows)) for lo in range(0, rows, size)]
