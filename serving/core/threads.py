"""onnxruntime's sessions and their threads: explicit, and one default for every surface.

A session runs on the thread that calls it (one intra-op thread); a runtime's threads are
chunks of rows scored side by side (serving.core.runtime.VAEGraphs.score_rows)."""

import os

import onnxruntime as ort


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
