"""Neighbourhoods and Gaussian weights against brute-force numpy versions of Eqs. 3-6."""

import numpy as np
import pytest

from roma_eval.errors import RomaEvalError
from roma_eval.neighbours import find_neighbours


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
    hood = find_neighbours(points, points, k=3, query_ids=ids, reference_ids=ids)
    assert hood.index.shape == (30, 3)
    assert all(i not in row for i, row in enumerate(hood.index))
    np.testing.assert_array_equal(hood.index, brute_knn(points, points, 3, ids, ids))


def test_gaussian_weights_are_eqs_5_and_6(points):
    sigma = 0.7
    hood = find_neighbours(points[:5], points[5:], k=4, sigma=sigma)
    for i in range(5):
        d2 = ((points[5:][hood.index[i]] - points[i]) ** 2).sum(1)
        sim = np.exp(-d2 / (2 * sigma**2))
        np.testing.assert_allclose(hood.weight[i], sim / sim.sum(), rtol=1e-4)


def test_eps_ball_is_eq_4(points):
    ids = list(range(30))
    eps = 3.5
    hood = find_neighbours(points, points, method="eps", eps=eps, query_ids=ids, reference_ids=ids)
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
    hood = find_neighbours(points, points, method="random", k=3, query_ids=ids, reference_ids=ids)
    assert all(i not in row for i, row in enumerate(hood.index))


def test_empty_success_set_is_one_clear_error(points):
    with pytest.raises(RomaEvalError, match="success set is empty"):
        find_neighbours(points, points[:0])


def test_k_larger_than_success_set_is_one_clear_error(points):
    ids = list(range(4))
    with pytest.raises(RomaEvalError, match="k=5 neighbours requested but the success set has only 4"):
        find_neighbours(points[:4], points[:4], k=5, query_ids=ids, reference_ids=ids)


def test_members_of_the_success_set_get_one_neighbour_fewer_when_k_equals_its_size(points):
    hood = find_neighbours(points[:6], points[:4], k=4, query_ids=range(6), reference_ids=range(4))
    assert hood.sizes().tolist() == [3, 3, 3, 3, 4, 4]
