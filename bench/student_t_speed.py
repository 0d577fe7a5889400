"""The Student-t cell density's cost in the runtime: in-process scoring rows/s of one bundle's
graphs with the Gaussian's and the Student-t's cell maths, side by side in alternating rounds
(K = 16, one onnxruntime thread, digits rows tiled to 20,000).

    .venv/bin/python -m bench.student_t_speed BUNDLE_DIR

The graphs are the same for both, so the ratio is the score maths' alone.
"""

import argparse
import time

import numpy as np

ROWS, ROUNDS, K = 20_000, 5, 16


def main() -> None:
    from sklearn.datasets import load_digits

    from serving.core.bundle import load_bundle
    from serving.core.runtime import VAERuntime

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", help="a bundle of digits rows (64 features)")
    runtime = VAERuntime(load_bundle(parser.parse_args().bundle), threads=1)
    x = np.resize(load_digits().data.astype(np.float32), (ROWS, 64))
    noise, rates = runtime.noise(0, K), {False: [], True: []}
    for _ in range(ROUNDS):
        for student_t in rates:
            runtime.graphs.student_t = student_t
            start = time.perf_counter()
            runtime.score(x, noise)
            rates[student_t].append(ROWS / (time.perf_counter() - start))
    gaussian, student_t = (float(np.median(rates[t])) for t in (False, True))
    print(f"Gaussian {gaussian:,.0f} rows/s, Student-t {student_t:,.0f} rows/s "
          f"({student_t / gaussian:.2f}×), median of {ROUNDS} rounds")


if __name__ == "__main__":
    main()
