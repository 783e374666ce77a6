"""Neighbourhoods and Gaussian weights against brute-force numpy versions of Eqs. 3-6."""

import numpy as np
import pytest

from roma_eval.errors import RomaEvalError
from roma_eval.neighbours import NeighbourSearch, find_neighbours


@pytest.fixture
def points():
    rng = np.random.default_rng(0)
    return rng.normal(size=(30, 8)).astype(np.float32)


def brute_knn(queries, reference, k, query_ids, reference_ids):
    out = []
    for q, qid in zip(queries, query_ids):
        d2 = ((reference - q) ** 2).sum(1)
        order = [j for j in np.argsort(d2, kind="stable") if reference_ids[j] != qid][:k]
        out.append(order)
    return np.array(out)


def test_knn_excludes_the_sample_itself_and_matches_brute_force(points):
    ids = list(range(30))
    hood = find_neighbours(points, points, NeighbourSearch(k=3), query_ids=ids, reference_ids=ids)
    assert hood.index.shape == (30, 3)
    assert all(i not in row for i, row in enumerate(hood.index))
    np.testing.assert_array_equal(hood.index, brute_knn(points, points, 3, ids, ids))


def test_gaussian_weights_are_eqs_5_and_6(points):
    sigma = 0.7
    hood = find_neighbours(points[:5], points[5:], NeighbourSearch(k=4, sigma=sigma))
    for i in range(5):
        d2 = ((points[5:][hood.index[i]] - points[i]) ** 2).sum(1)
        sim = np.exp(-d2 / (2 * sigma**2))
        np.testing.assert_allclose(hood.weight[i], sim / sim.sum(), rtol=1e-4)


def test_eps_ball_is_eq_4(points):
    ids = list(range(30))
    eps = 3.5
    hood = find_neighbours(points, points, NeighbourSearch("eps", eps=eps), query_ids=ids, reference_ids=ids)
    for i in range(30):
        d = np.sqrt(((points - points[i]) ** 2).sum(1))
        expected = {j for j in range(30) if j != i and d[j] <= eps}
        assert set(hood.index[i][hood.index[i] >= 0].tolist()) == expected
        if expected:
            assert hood.weight[i].sum() == pytest.approx(1.0, abs=1e-5)
        else:
            assert hood.weight[i].sum() == 0


def test_random_neighbours_never_self(points):
    ids = list(range(30))
    hood = find_neighbours(points, points, NeighbourSearch("random", k=3), query_ids=ids, reference_ids=ids)
    assert all(i not in row for i, row in enumerate(hood.index))


def test_empty_success_set_is_one_clear_error(points):
    with pytest.raises(RomaEvalError, match="success set is empty"):
        find_neighbours(points, points[:0])


def test_k_larger_than_success_set_is_one_clear_error(points):
    ids = list(range(4))
    with pytest.raises(RomaEvalError, match="k=5 neighbours requested but the success set has only 4"):
        find_neighbours(points[:4], points[:4], NeighbourSearch(k=5), query_ids=ids, reference_ids=ids)


def test_members_of_the_success_set_get_one_neighbour_fewer_when_k_equals_its_size(points):
    hood = find_neighbours(points[:6], points[:4], NeighbourSearch(k=4), query_ids=range(6), reference_ids=range(4))
    assert hood.sizes().tolist() == [3, 3, 3, 3, 4, 4]


@pytest.fixture
def unit_points(points):
    return points / np.linalg.norm(points, axis=1, keepdims=True)


@pytest.mark.parametrize("kernel", ["eq5", "released"])
@pytest.mark.parametrize("normalise", [True, False])
def test_both_kernels_match_brute_force(points, unit_points, kernel, normalise):
    """eq5: exp(-||a - b||² / (2σ²)) (Eq. 5); released: exp(-(1 - cos)² / (2σ²)) on the cosine similarity, which
    does not depend on the vectors' norms; both normalised over the neighbours (Eq. 6)."""
    vectors = unit_points if normalise else points
    sigma = 0.4
    hood = find_neighbours(vectors[:6], vectors[6:], NeighbourSearch(k=5, sigma=sigma, kernel=kernel))
    for i in range(6):
        neighbours = vectors[6:][hood.index[i]]
        if kernel == "eq5":
            sim = np.exp(-((neighbours - vectors[i]) ** 2).sum(1) / (2 * sigma**2))
        else:
            cos = neighbours @ vectors[i] / (np.linalg.norm(neighbours, axis=1) * np.linalg.norm(vectors[i]))
            sim = np.exp(-((1 - cos) ** 2) / (2 * sigma**2))
        np.testing.assert_allclose(hood.weight[i], sim / sim.sum(), rtol=1e-4)


def test_the_kernels_at_cosine_0_8():
    """σ = 0.4: a neighbour at cosine 0.8 beside one at cosine 1 has sim 0.29 in Eq. 5 and 0.88 in the released
    kernel (the weight ratio of the two neighbours is the farther one's sim)."""
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    reference = np.array([[1.0, 0.0], [0.8, 0.6]], dtype=np.float32)
    sims = {}
    for kernel in ("eq5", "released"):
        hood = find_neighbours(query, reference, NeighbourSearch(k=2, sigma=0.4, kernel=kernel))
        assert hood.index[0].tolist() == [0, 1]
        sims[kernel] = hood.weight[0, 1] / hood.weight[0, 0]
    assert sims["eq5"] == pytest.approx(np.exp(-1.25), rel=1e-5) and round(float(sims["eq5"]), 2) == 0.29
    assert sims["released"] == pytest.approx(np.exp(-0.125), rel=1e-5) and round(float(sims["released"]), 2) == 0.88


def test_unknown_kernel_is_one_clear_error(points):
    with pytest.raises(RomaEvalError, match="kernel='rbf' is unknown; use one of eq5, released"):
        NeighbourSearch(k=2, kernel="rbf")
