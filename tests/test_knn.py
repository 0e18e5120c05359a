"""Tests for jaxclf.knn against float64 NumPy/SciPy brute force and scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.neighbors import KNeighborsClassifier

from jaxclf import _search, knn

SKLEARN_METRIC = {"l1": "manhattan", "l2": "euclidean"}
SCIPY_METRIC = {"l1": "cityblock", "l2": "euclidean", "sqeuclidean": "sqeuclidean"}


def brute_force(queries, database, metric, k):
    """float64 brute force: distances and indices, ties to the lower index."""
    queries = np.asarray(queries, np.float64).reshape(len(queries), -1)
    database = np.asarray(database, np.float64).reshape(len(database), -1)
    distances = cdist(queries, database, SCIPY_METRIC[metric])
    indices = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, indices, axis=1), indices


def random_pixels(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def pixel_data():
    rng = np.random.default_rng(0)
    return (
        random_pixels(rng, (40, 3072)),
        random_pixels(rng, (700, 3072)),
        rng.integers(0, 10, 700).astype(np.int32),
    )


def check_against_references(queries, database, labels, metric):
    """Compare indices for k in {1, 3, 5, 10} with NumPy and votes with scikit-learn.

    One k=10 search serves every k: the k nearest are a prefix of the 10
    nearest, and `knn.predict` is checked on its own for k=3.
    """
    distances, indices = knn.nearest_neighbors(queries, database, k=10, metric=metric)
    expected_distances, expected_indices = brute_force(queries, database, metric, 10)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-5, err_msg=metric)

    rows = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)
    classifier = KNeighborsClassifier(algorithm="brute", metric=SKLEARN_METRIC[metric])
    classifier.fit(rows(database), labels)
    for k in [1, 3, 5, 10]:
        np.testing.assert_array_equal(indices[:, :k], expected_indices[:, :k],
                                      err_msg=f"{metric} k={k} indices")
        classifier.set_params(n_neighbors=k)
        votes = knn.vote(jnp.asarray(labels)[indices[:, :k]], num_classes=10)
        np.testing.assert_array_equal(jnp.argmax(votes, axis=-1), classifier.predict(rows(queries)),
                                      err_msg=f"{metric} k={k} predictions")

    classifier.set_params(n_neighbors=3)
    predicted = knn.predict(queries, database, labels, k=3, metric=metric)
    assert predicted.dtype == jnp.int32
    np.testing.assert_array_equal(predicted, classifier.predict(rows(queries)), err_msg=metric)


@pytest.mark.parametrize("metric", ["l1", "l2"])
@pytest.mark.parametrize("kind", ["uint8", "float"])
def test_matches_numpy_and_sklearn(pixel_data, metric, kind):
    queries, database, labels = pixel_data
    if kind == "float":
        # Normal values: scaled pixels would give exact real-number ties that
        # float32 inputs break at random.
        rng = np.random.default_rng(4)
        queries = rng.standard_normal(queries.shape).astype(np.float32)
        database = rng.standard_normal(database.shape).astype(np.float32)
    check_against_references(queries, database, labels, metric)


@pytest.mark.real_data
@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_matches_numpy_and_sklearn_on_cifar(real_data_dir, metric):
    from jaxclf import data

    cifar = data.load_cifar10(real_data_dir, validation_size=0)
    check_against_references(cifar.test.images[:100], cifar.train.images[:2000],
                             cifar.train.labels[:2000], metric)


@pytest.mark.parametrize(
    "metric, expected",
    [("l1", 307200.0), ("l2", 5542.56), ("sqeuclidean", 30720000.0)],
)
def test_uint8_does_not_wrap(metric, expected):
    dark = np.full((1, 3072), 100, np.uint8)
    bright = np.full((1, 3072), 200, np.uint8)

    for queries, database in [(dark, bright), (bright, dark)]:
        distances, indices = knn.nearest_neighbors(queries, database, k=1, metric=metric)
        np.testing.assert_allclose(distances[0, 0], expected, rtol=1e-6, err_msg=metric)
        assert indices[0, 0] == 0
        pairwise = knn.pairwise_distances(queries, database, metric)
        np.testing.assert_allclose(pairwise[0, 0], expected, rtol=1e-6, err_msg=metric)


def test_three_points_vote_and_k_limits():
    database = np.array([[0.0], [1.0], [2.0]], np.float32)
    labels = np.array([0, 1, 1], np.int32)
    query = np.array([[0.1]], np.float32)

    assert knn.predict(query, database, labels, k=1)[0] == 0
    assert knn.predict(query, database, labels, k=3)[0] == 1
    for bad_k in [4, 0]:
        with pytest.raises(ValueError, match=rf"database size 3, got k={bad_k}"):
            knn.predict(query, database, labels, k=bad_k)


@pytest.mark.parametrize("metric", ["l1", "l2", "sqeuclidean"])
def test_pairwise_distances_match_scipy(metric):
    rng = np.random.default_rng(1)
    x, y = random_pixels(rng, (5, 2, 4, 3)), random_pixels(rng, (7, 24))
    expected = cdist(x.reshape(5, -1).astype(np.float64), y.astype(np.float64),
                     SCIPY_METRIC[metric])
    np.testing.assert_allclose(knn.pairwise_distances(x, y, metric), expected, rtol=1e-6)


MIXED_DTYPE_CASES = [
    ("integer-valued float and fraction", np.array([[0.0, 0.0]]), np.array([[0.5, 0.0]])),
    ("uint8 and float32", np.zeros((1, 2), np.uint8),
     np.array([[0.5, 0.0], [300.7, 0.0]], np.float32)),
    ("float32 and uint8", np.array([[0.5, 0.0], [300.7, 0.0]], np.float32),
     np.array([[0, 0], [255, 1]], np.uint8)),
]


@pytest.mark.parametrize("metric", ["l1", "l2", "sqeuclidean"])
@pytest.mark.parametrize("name, x, y", MIXED_DTYPE_CASES, ids=[c[0] for c in MIXED_DTYPE_CASES])
def test_pairwise_distances_mix_pixels_and_floats(metric, name, x, y):
    expected = cdist(np.asarray(x, np.float64), np.asarray(y, np.float64), SCIPY_METRIC[metric])
    np.testing.assert_allclose(knn.pairwise_distances(x, y, metric), expected, rtol=1e-6,
                               err_msg=name)


def test_integer_pixels_of_any_dtype_match_uint8(pixel_data):
    queries, database, _ = pixel_data
    expected = knn.nearest_neighbors(queries[:20], database[:300], k=5, metric="l1")
    for dtype in (np.int64, np.int32, np.uint16):
        found = knn.nearest_neighbors(queries[:20].astype(dtype), database[:300].astype(dtype),
                                      k=5, metric="l1")
        np.testing.assert_array_equal(found[1], expected[1], err_msg=str(dtype))
        np.testing.assert_array_equal(found[0], expected[0], err_msg=str(dtype))


UNSUPPORTED_DTYPE_CASES = [
    ("int64 above 2^24", np.array([[2**25 + 1, 0], [2**25, 0]], np.int64),
     r"database has dtype int64 with values from 0 to 33554433.*astype\(np.float32\)"),
    ("negative int32", np.array([[-1, 0], [3, 0]], np.int32), r"int32 with values from -1"),
    ("complex", np.array([[1 + 2j, 0], [0, 0]]), r"real floats, got dtype complex128"),
    ("bool", np.array([[True, False], [False, False]]), r"real floats, got dtype bool"),
]


@pytest.mark.parametrize("name, database, message", UNSUPPORTED_DTYPE_CASES,
                         ids=[c[0] for c in UNSUPPORTED_DTYPE_CASES])
def test_unsupported_dtypes_are_rejected(name, database, message):
    queries = np.zeros((1, 2), np.uint8)
    with pytest.raises(ValueError, match=message):
        knn.nearest_neighbors(queries, database, k=1, metric="l1")


def test_wide_integers_are_rejected_under_jit():
    search = jax.jit(lambda q, b: knn.nearest_neighbors(q, b, k=1))
    with pytest.raises(ValueError, match=r"queries has dtype int32; under jax.jit"):
        search(jnp.zeros((1, 2), jnp.int32), jnp.zeros((3, 2), jnp.float32))


@pytest.mark.parametrize("metric", ["l1", "l2", "sqeuclidean"])
def test_values_near_the_magnitude_bound_search_correctly(metric):
    bound = 0.999 * 1e18 / np.sqrt(2)  # float32 rounding must not cross the bound
    queries = np.array([[0.5, 0.0], [-bound, bound]], np.float32)
    database = np.array([[bound, 0.0], [0.3 * bound, 0.0], [0.6 * bound, -bound]], np.float32)
    expected_distances, expected_indices = brute_force(queries, database, metric, k=3)

    distances, indices = knn.nearest_neighbors(queries, database, k=3, metric=metric)

    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-5)


@pytest.mark.parametrize("name", ["queries", "database"])
def test_values_above_the_magnitude_bound_are_rejected(name):
    arrays = {"queries": np.array([[0.5, 0.0]], np.float32),
              "database": np.array([[1e19, 0.0], [2e19, 0.0]], np.float32)}
    if name == "queries":
        arrays = {"queries": arrays["database"][:1] * 3, "database": arrays["queries"]}
    message = rf"{name} has values of magnitude up to .*e\+19, above the bound 1e18 / sqrt\(2"
    with pytest.raises(ValueError, match=message):
        knn.nearest_neighbors(arrays["queries"], arrays["database"], k=1)


def test_images_and_rows_agree(pixel_data):
    queries, database, _ = pixel_data
    images = database[:600].reshape(600, 32, 32, 3)
    from_rows = knn.nearest_neighbors(queries, database[:600], k=5)
    from_images = knn.nearest_neighbors(queries.reshape(-1, 32, 32, 3), images, k=5)
    np.testing.assert_array_equal(from_rows[1], from_images[1])
    np.testing.assert_array_equal(from_rows[0], from_images[0])


def test_integer_valued_floats_take_exact_path(pixel_data):
    queries, database, _ = pixel_data
    as_uint8 = knn.nearest_neighbors(queries, database, k=5)
    as_float = knn.nearest_neighbors(queries.astype(np.float32), database.astype(np.float32), k=5)
    np.testing.assert_array_equal(as_uint8[1], as_float[1])
    np.testing.assert_array_equal(as_uint8[0], as_float[0])


def near_tie_database():
    """Rows at squared L2 distances X + 1, X, X from the all-200 query, X about 1e8.

    float32 cannot tell X from X + 1 (the spacing there is 8), so the
    expansion |q|^2 + |b|^2 - 2 q.b ties them or swaps them.
    """
    query = np.full((1, 3072), 200, np.uint8)
    nearer = np.full(3072, 20, np.uint8)
    nearer[0] = 200
    farther = nearer.copy()
    farther[0] = 201
    return query, np.stack([farther, nearer, nearer])


@pytest.mark.parametrize("metric", ["l2", "sqeuclidean"])
def test_near_tie_beats_float32_expansion(metric):
    query, database = near_tie_database()
    expected_distances, expected_indices = brute_force(query, database, metric, 3)
    np.testing.assert_array_equal(expected_indices, [[1, 2, 0]])

    as_float = query.astype(np.float32), database.astype(np.float32)
    expansion = (
        np.sum(as_float[0] ** 2, axis=1)[:, None]
        + np.sum(as_float[1] ** 2, axis=1)[None, :]
        - 2 * as_float[0] @ as_float[1].T
    )
    assert np.argsort(expansion[0], kind="stable").tolist() != [1, 2, 0], "expansion resolved it"

    distances, indices = knn.nearest_neighbors(query, database, k=3, metric=metric)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-7)


def test_float_near_tie_with_large_offset():
    """Values near 1000 make the float32 expansion cancel; direct differences do not."""
    rng = np.random.default_rng(2)
    database = (1000.0 + rng.standard_normal((300, 3072))).astype(np.float32)
    queries = database[:20] + np.float32(0.01) * rng.standard_normal((20, 3072)).astype(
        np.float32)
    expected_distances, expected_indices = brute_force(queries, database, "l2", 4)

    distances, indices = knn.nearest_neighbors(queries, database, k=4, metric="l2")
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-4)


def tied_pixels():
    """Binary pixels over 16 features: most distances are shared by many rows."""
    rng = np.random.default_rng(3)
    return (
        rng.integers(0, 2, (50, 16), dtype=np.uint8),
        rng.integers(0, 2, (1300, 16), dtype=np.uint8),
    )


@pytest.mark.parametrize("metric", ["l1", "l2"])
def test_ties_order_by_index_for_every_budget(metric):
    queries, database = tied_pixels()
    _, expected_indices = brute_force(queries, database, metric, 20)

    for budget, pool in [(2_000, 20), (50_000, 200), (knn.DEFAULT_MEMORY_BUDGET_BYTES, None)]:
        _, indices = knn.nearest_neighbors(
            queries, database, k=20, metric=metric, memory_budget_bytes=budget,
            candidate_pool_size=pool,
        )
        np.testing.assert_array_equal(
            indices, expected_indices, err_msg=f"{metric} budget={budget} pool={pool}"
        )


def test_chunk_top_k_merges_to_whole_search():
    queries, database = tied_pixels()
    expected = knn.nearest_neighbors(queries, database, k=20, metric="l2")

    keys, indices = knn._chunk_top_k(queries, database[700:], 700, k=20, metric="l2")
    for start, stop in [(0, 10), (10, 700)]:
        chunk_keys, chunk_indices = knn._chunk_top_k(
            queries, database[start:stop], start, k=20, metric="l2"
        )
        keys, indices = _search._merge_top_k(keys, indices, chunk_keys, chunk_indices, k=20)

    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_array_equal(_search._keys_to_distances(keys, "l2"), expected[0])


def test_certificate_fallback_is_exact(pixel_data):
    queries, database, _ = pixel_data
    query_chunks = jnp.asarray(queries)[None]
    pool_scores, pool_indices = _search._candidate_pools(
        query_chunks, jnp.asarray(database), database_chunk=256, pool_size=1
    )
    keys, _ = _search._rerank(
        query_chunks[0], jnp.asarray(database), pool_indices[0], k=1, group=8
    )
    max_norm = jnp.sqrt(jnp.max(_search._squared_norms(jnp.asarray(database))).astype(jnp.float32))
    certified = _search._certify(query_chunks[0], keys[:, 0], pool_scores[0, :, -1], max_norm,
                                 num_features=3072, pool_covers_database=False)
    assert not bool(jnp.all(certified)), "a pool of 1 should leave some queries uncertified"

    _, expected_indices = brute_force(queries, database, "l2", 1)
    _, indices = knn.nearest_neighbors(queries, database, k=1, candidate_pool_size=1)
    np.testing.assert_array_equal(indices, expected_indices)


def test_vmap_matches_batched_calls(pixel_data):
    queries, database, _ = pixel_data
    batches = queries[:30].reshape(3, 10, 3072)

    def search(batch):
        return knn.nearest_neighbors(batch, jnp.asarray(database), k=5)

    mapped_distances, mapped_indices = jax.vmap(search)(jnp.asarray(batches))
    for batch, distances, indices in zip(batches, mapped_distances, mapped_indices):
        expected_distances, expected_indices = knn.nearest_neighbors(batch, database, k=5)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_array_equal(distances, expected_distances)


def test_jit_matches_eager(pixel_data):
    queries, database, labels = pixel_data

    @jax.jit
    def classify(queries, database, labels):
        return knn.predict(queries, database, labels, k=5, metric="l1")

    expected = knn.predict(queries, database, labels, k=5, metric="l1")
    np.testing.assert_array_equal(classify(queries, database, labels), expected)


def test_second_call_does_not_recompile(pixel_data):
    queries, database, labels = pixel_data
    knn.predict(queries, database, labels, k=3, metric="l1")
    cache_size = _search._search_jit._cache_size()

    knn.predict(queries + 1, database, labels, k=3, metric="l1")
    assert _search._search_jit._cache_size() == cache_size


def test_vote_ties_go_to_smallest_label():
    labels = jnp.array([[3, 1, 1, 3], [2, 0, 1, 4]], jnp.int32)
    votes = knn.vote(labels, num_classes=5)
    np.testing.assert_array_equal(votes, [[0, 2, 0, 2, 0], [1, 1, 1, 0, 1]])
    np.testing.assert_array_equal(jnp.argmax(votes, axis=-1), [1, 0])


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array([[12, -1]]),
         r"neighbor_labels must lie in \[0, num_classes=10\), got values from -1 to 12"),
        (np.array([[2**32 + 1, 0]]), r"got values from 0 to 4294967297"),
        (np.array([[1.0, 2.0]]), r"neighbor_labels must be integers, got dtype float64"),
    ],
)
def test_vote_rejects_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        knn.vote(labels, num_classes=10)


def test_distance_weights_match_sklearn(pixel_data):
    queries, database, labels = pixel_data
    queries = np.concatenate([database[:3], queries[:20]])

    classifier = KNeighborsClassifier(5, algorithm="brute", weights="distance")
    classifier.fit(database.astype(np.float64), labels)
    expected = classifier.predict_proba(queries.astype(np.float64))
    probabilities = knn.predict_proba(queries, database, labels, k=5, weights="distance")
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(
        knn.predict(queries, database, labels, k=5, weights="distance"), expected.argmax(1)
    )


def test_uniform_proba_matches_sklearn(pixel_data):
    queries, database, labels = pixel_data
    classifier = KNeighborsClassifier(7, algorithm="brute").fit(database.astype(float), labels)
    probabilities = knn.predict_proba(queries, database, labels, k=7)
    np.testing.assert_allclose(probabilities, classifier.predict_proba(queries.astype(float)),
                               atol=1e-7)


def bad_cases():
    good = np.zeros((4, 3), np.float32)
    labels = np.array([0, 1, 2, 3], np.int32)
    with_nan = good.copy()
    with_nan[1, 2] = np.nan
    with_inf = good.copy()
    with_inf[0, 0] = np.inf
    return [
        ("k zero", dict(k=0), r"k=0"),
        ("k too large", dict(k=5), r"database size 4, got k=5"),
        ("k float", dict(k=2.0), r"k must be an int, got 2.0"),
        ("features differ", dict(queries=np.zeros((2, 4), np.float32)), r"4 features.*3"),
        ("label too large", dict(labels=np.array([0, 1, 2, 10])), r"num_classes=10.*to 10"),
        ("label negative", dict(labels=np.array([-1, 1, 2, 3])), r"from -1"),
        ("label beyond int32", dict(labels=np.array([0, 1, 2, 2**32 + 3])),
         r"num_classes=10.*to 4294967299"),
        ("label float", dict(labels=np.array([0.0, 1.0, 2.0, 3.0])),
         r"database_labels must be integers, got dtype float64"),
        ("labels shape", dict(labels=labels[:3]), r"database_labels must have shape \[4\]"),
        ("nan query", dict(queries=with_nan), r"queries contains NaN"),
        ("inf database", dict(database=with_inf), r"database contains NaN or infinite"),
        ("unknown metric", dict(metric="cosine"), r"'l1', 'l2', 'sqeuclidean', got 'cosine'"),
        ("empty queries", dict(queries=np.zeros((0, 3), np.float32)), r"queries is empty"),
        ("empty database", dict(database=np.zeros((0, 3), np.float32)), r"database is empty"),
        ("bad weights", dict(weights="inverse"), r"weights must be one of.*'inverse'"),
        ("bad budget", dict(memory_budget_bytes=0), r"memory_budget_bytes.*got 0"),
        ("bad rank", dict(queries=np.zeros(3, np.float32)), r"queries must have shape"),
    ]


@pytest.mark.parametrize("name, change, message", bad_cases(), ids=[c[0] for c in bad_cases()])
def test_bad_input_raises_before_compiling(name, change, message):
    arguments = dict(
        queries=np.ones((2, 3), np.float32), database=np.zeros((4, 3), np.float32),
        labels=np.array([0, 1, 2, 3], np.int32), k=1, metric="l2", weights="uniform",
        memory_budget_bytes=knn.DEFAULT_MEMORY_BUDGET_BYTES,
    )
    arguments.update(change)
    cache_size = _search._search_jit._cache_size()

    with pytest.raises(ValueError, match=message):
        knn.predict(
            arguments["queries"], arguments["database"], arguments["labels"], k=arguments["k"],
            metric=arguments["metric"], weights=arguments["weights"],
            memory_budget_bytes=arguments["memory_budget_bytes"],
        )
    assert _search._search_jit._cache_size() == cache_size, name


@pytest.mark.real_data
@pytest.mark.parametrize("metric, expected_correct", [("l1", 378), ("l2", 349)])
def test_full_train_accuracy_on_1000_test_images(real_data_dir, metric, expected_correct):
    from jaxclf import data

    cifar = data.load_cifar10(real_data_dir, validation_size=0)
    predicted = knn.predict(cifar.test.images[:1000], cifar.train.images, cifar.train.labels,
                            k=1, metric=metric)
    correct = int(np.sum(np.asarray(predicted) == cifar.test.labels[:1000]))
    assert correct == expected_correct, f"{metric}: {correct} of 1000 correct"


@pytest.mark.parametrize("kind", ["bright pixels", "normal floats"])
def test_gemm_scores_within_error_bound(kind):
    rng = np.random.default_rng(5)
    if kind == "bright pixels":
        # Large values make the products and the float32 sums largest.
        queries = rng.integers(200, 256, (16, 3072), dtype=np.uint8)
        database = rng.integers(200, 256, (600, 3072), dtype=np.uint8)
    else:
        queries = rng.standard_normal((16, 3072)).astype(np.float32)
        database = rng.standard_normal((600, 3072)).astype(np.float32)

    scores, indices = _search._candidate_pools(
        jnp.asarray(queries)[None], jnp.asarray(database), database_chunk=256, pool_size=600
    )
    as_float64 = queries.astype(np.float64), database.astype(np.float64)
    exact = np.sum(as_float64[1] ** 2, axis=1)[None, :] - 2 * as_float64[0] @ as_float64[1].T
    exact = np.take_along_axis(exact, np.asarray(indices[0]), axis=1)

    database_norms = _search._squared_norms(jnp.asarray(database))
    max_norm = jnp.sqrt(jnp.max(database_norms).astype(jnp.float32))
    eps = _search._score_error_bound(_search._squared_norms(jnp.asarray(queries)), max_norm,
                                     num_features=3072)
    error = np.abs(np.asarray(scores[0], np.float64) - exact)
    assert np.all(error <= np.asarray(eps)[:, None]), f"max error / eps {np.max(error / eps[:, None])}"
