"""PCA for the report's manifold figure: covariance eigendecomposition (report/plots.py) vs a thin SVD of the data.

Prints the ratio measured in one run, best of 5 repeats each, on shapes of the demo's routing dumps (3,200 samples,
384-dim embeddings, 40-dim routing) and of a real run's (14,042 MMLU samples, 5 layers x 64 experts).
"""

import time

import numpy as np

from roma_eval.report.plots import pca_basis


def best_of(fn, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    rng = np.random.default_rng(0)
    for shape in [(3200, 384), (3200, 40), (14042, 320), (14042, 384)]:
        x = rng.normal(size=shape)
        svd = best_of(lambda x=x: np.linalg.svd(x - x.mean(axis=0), full_matrices=False))
        eigh = best_of(lambda x=x: pca_basis(x))
        print(f"{shape[0]:>6} x {shape[1]:<4} svd {svd * 1e3:8.1f} ms  covariance eigh {eigh * 1e3:7.1f} ms  "
              f"ratio {svd / eigh:5.1f}x")


if __name__ == "__main__":
    main()
