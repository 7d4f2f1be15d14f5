"""ModalityStandardizer: streaming fit, fallback for degenerate keys, persistence, compatibility."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmgap_core.mining import mine_pseudo_positives
from mmgap_core.stats import FORMAT_NAME, FORMAT_VERSION, ModalityStandardizer, NotFittedError

QUERY_MODS = ["text", "image"]
CAND_MODS = ["text", "image", "audio"]

cosines = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)
pair = st.tuples(st.sampled_from(QUERY_MODS), st.sampled_from(CAND_MODS), cosines)


def fitted(scores, cands, queries="text", **kw) -> ModalityStandardizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return ModalityStandardizer(**kw).fit(scores, cands, queries)


def direct_moments(pairs):
    """Two-pass float64 mean / population std per (query, candidate) key."""
    out = {}
    for key in {(q, c) for q, c, _ in pairs}:
        v = np.array([s for q, c, s in pairs if (q, c) == key])
        out[key] = (v.size, v.mean(), v.std())
    return out


# ---------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    fit_pairs=st.lists(pair, min_size=1, max_size=40),
    scores=st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=2, max_size=30),
    data=st.data(),
)
def test_standardization_never_reorders_within_a_modality(fit_pairs, scores, data):
    q, c, s = zip(*fit_pairs)
    std = fitted(list(s), list(c), list(q))
    key = data.draw(st.sampled_from(std.keys_))
    z = std.transform(np.array(scores), key[1], key[0])
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(z[order]) >= 0)
    assert np.isfinite(z).all()
    # Same through the per-item label path.
    z2 = std.transform(np.array(scores), np.full(len(scores), key[1]), key[0])
    np.testing.assert_array_equal(z, z2)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(pairs=st.lists(pair, min_size=1, max_size=60), data=st.data())
def test_partial_fit_over_any_chunking_equals_one_fit(pairs, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(pairs)), max_size=8)))
    bounds = [0, *cuts, len(pairs)]
    one = fitted([p[2] for p in pairs], [p[1] for p in pairs], [p[0] for p in pairs])
    streamed = ModalityStandardizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for a, b in zip(bounds[:-1], bounds[1:]):
            chunk = pairs[a:b]
            # Empty chunks are allowed; single-modality chunks use the one-label-for-all form.
            qs = [p[0] for p in chunk]
            qs = qs[0] if chunk and len(set(qs)) == 1 and data.draw(st.booleans()) else qs
            streamed.partial_fit([p[2] for p in chunk], [p[1] for p in chunk], qs)
    want = direct_moments(pairs)
    assert streamed.keys_ == one.keys_ == sorted(want)
    for key, (n, mean, sd) in want.items():
        assert streamed.count_[key] == one.count_[key] == n
        assert math.isclose(streamed.mean_[key], mean, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(one.mean_[key], mean, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(streamed.raw_std_[key], sd, rel_tol=1e-7, abs_tol=1e-9)
        assert math.isclose(one.raw_std_[key], sd, rel_tol=1e-7, abs_tol=1e-9)
    # The std actually used (after any fallback) agrees too, unless a std sits right at min_std.
    if all(abs(sd - one.min_std) > 1e-9 for _, _, sd in want.values()):
        assert streamed.fallback_ == one.fallback_
        for key in want:
            assert math.isclose(streamed.std_[key], one.std_[key], rel_tol=1e-7, abs_tol=1e-9)


def test_fit_replaces_and_partial_fit_accumulates():
    std = ModalityStandardizer().fit([0.1, 0.3], ["image", "image"])
    std.partial_fit([0.5, 0.7], "image")
    assert std.count_[("text", "image")] == 4
    assert math.isclose(std.mean_[("text", "image")], 0.4)
    std.fit([0.2, 0.4], ["text", "text"])
    assert std.keys_ == [("text", "text")]


def test_known_values_and_gap():
    std = ModalityStandardizer().fit([0.30, 0.34, 0.20, 0.24], ["text", "text", "image", "image"])
    assert std.params("text", "text") == pytest.approx((0.32, 0.02))
    assert std.params("text", "image") == pytest.approx((0.22, 0.02))
    assert std.gap() == pytest.approx({"text": 0.32, "image": 0.22})
    np.testing.assert_allclose(std.transform([0.32, 0.26], "image"), [5.0, 2.0])
    np.testing.assert_allclose(
        std.transform(np.array([[0.32, 0.32]]), np.array([["text", "image"]])), [[0.0, 5.0]]
    )
    assert "text->image" in repr(std) and repr(ModalityStandardizer()).endswith("(unfitted)")


# ---------------------------------------------------------------- degenerate keys


def test_single_pseudo_pair_falls_back_to_pooled_std_of_same_query_modality():
    scores = [0.30, 0.34, 0.38, 0.20, 0.26, 0.90, 0.50, 0.60]
    cands = ["text", "text", "text", "image", "image", "audio", "text", "image"]
    queries = ["text"] * 6 + ["image"] * 2
    with pytest.warns(UserWarning, match="degenerate statistics") as rec:
        std = ModalityStandardizer().fit(scores, cands, queries)
    assert "('text', 'audio')" in str(rec[0].message)
    assert std.fallback_ == {("text", "audio"), ("image", "text"), ("image", "image")}
    # Pooled over the healthy text-query keys only: sqrt((m2_text + m2_image) / (n_text + n_image)).
    m2 = np.var([0.30, 0.34, 0.38]) * 3 + np.var([0.20, 0.26]) * 2
    pooled = math.sqrt(m2 / 5)
    assert std.std_[("text", "audio")] == pytest.approx(pooled)
    assert std.raw_std_[("text", "audio")] == 0.0
    assert std.mean_[("text", "audio")] == pytest.approx(0.90)
    # The image query modality has no healthy key: pure mean shift with std 1.
    assert std.std_[("image", "text")] == 1.0 and std.std_[("image", "image")] == 1.0
    z = std.transform([0.9, 0.1], "audio", "text")
    np.testing.assert_allclose(z, [0.0, -0.8 / pooled])
    assert np.isfinite(std.transform([0.0, 1.0], "image", "image")).all()
    assert ("text", "text") not in std.fallback_


def test_zero_variance_key_falls_back():
    with pytest.warns(UserWarning, match=r"\('text', 'image'\)"):
        std = ModalityStandardizer().fit([0.2] * 5 + [0.3, 0.5], ["image"] * 5 + ["text"] * 2)
    assert std.fallback_ == {("text", "image")}
    assert std.std_[("text", "image")] == pytest.approx(0.1)
    z = std.transform(np.linspace(-1, 1, 5), "image")
    assert np.isfinite(z).all() and np.all(np.diff(z) > 0)


def test_key_becomes_healthy_after_more_data():
    with pytest.warns(UserWarning):
        std = ModalityStandardizer().partial_fit([0.2], ["image"])
    assert std.std_[("text", "image")] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning once the key has enough spread
        std.partial_fit([0.4], ["image"])
    assert std.fallback_ == set() and std.std_[("text", "image")] == pytest.approx(0.1)


def test_min_std_threshold():
    with pytest.warns(UserWarning):
        std = ModalityStandardizer(min_std=0.5).fit([0.1, 0.3, 0.0, 2.0], ["a", "a", "b", "b"])
    assert std.fallback_ == {("text", "a")} and std.std_[("text", "a")] == pytest.approx(1.0)


# ---------------------------------------------------------------- persistence & compatibility


def test_to_dict_from_dict_round_trip():
    with pytest.warns(UserWarning):
        std = ModalityStandardizer(model_id="ViT-B-32/openai", dim=np.int64(512)).fit(
            [0.3, 0.32, 0.2, 0.25, 0.22, 0.7],
            ["text", "text", "image", "image", "image", "audio"],
        )
    data = json.loads(json.dumps(std.to_dict()))
    assert data["format"] == FORMAT_NAME and data["version"] == FORMAT_VERSION
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading does not warn again
        back = ModalityStandardizer.from_dict(data)
    assert back.model_id == "ViT-B-32/openai" and back.dim == 512
    assert back.keys_ == std.keys_ and back.fallback_ == std.fallback_
    assert back.count_ == std.count_ and back.std_ == pytest.approx(std.std_)
    x = np.linspace(-1, 1, 11)
    for _, c in std.keys_:
        np.testing.assert_array_equal(back.transform(x, c), std.transform(x, c))
    # Fitting continues from loaded statistics exactly as from the original.
    with pytest.warns(UserWarning, match=r"\('text', 'audio'\)"):  # still a single audio pair
        back.partial_fit([0.21], ["image"])
        std.partial_fit([0.21], ["image"])
    assert back.mean_ == pytest.approx(std.mean_) and back.raw_std_ == pytest.approx(std.raw_std_)


def good_dict():
    return fitted([0.1, 0.2, 0.3, 0.5], ["a", "a", "b", "b"], model_id="m", dim=4).to_dict()


def edited(**changes):
    d = good_dict()
    for key, value in changes.items():
        if value is KeyError:
            del d[key]
        else:
            d[key] = value
    return d


def edited_row(**changes):
    d = good_dict()
    d["stats"][0].update(changes)
    return d


@pytest.mark.parametrize(
    "data, match",
    [
        ([1, 2], "not mmgap standardizer data"),
        (edited(format="something.else"), "not mmgap standardizer data"),
        (edited(version=2), "has version 2; this mmgap reads version 1"),
        (edited(version=KeyError), "has version None"),
        (edited(stats=KeyError), "malformed standardizer data"),
        (edited(stats=[]), "holds no statistics"),
        (edited(stats=["x"]), "malformed standardizer data"),
        (edited(min_std=None), "malformed standardizer data"),
        (edited(min_std=-1.0), "min_std must be a positive"),
        (edited(dim="512"), "dim must be a positive integer"),
        (edited_row(count=0), "invalid statistics row"),
        (edited_row(m2=-1.0), "invalid statistics row"),
        (edited_row(mean=float("nan")), "invalid statistics row"),
        (edited_row(mean="abc"), "could not convert|malformed"),
    ],
)
def test_from_dict_errors(data, match):
    with pytest.raises(ValueError, match=match):
        ModalityStandardizer.from_dict(data)


def test_check_compatible():
    std = fitted([0.1, 0.2], ["a", "a"], model_id="ViT-B-32", dim=512)
    std.check_compatible("ViT-B-32", 512)
    std.check_compatible()  # nothing to compare
    with pytest.raises(ValueError, match="fitted for model 'ViT-B-32', not 'ViT-L-14'"):
        std.check_compatible("ViT-L-14", 512)
    with pytest.raises(ValueError, match="embedding dimension 512, not 768"):
        std.check_compatible("ViT-B-32", 768)
    # Statistics fitted without a model id accept any model, but not another dimension.
    anon = fitted([0.1, 0.2], ["a", "a"], dim=512)
    anon.check_compatible("anything", 512)
    with pytest.raises(ValueError, match="dimension"):
        anon.check_compatible(dim=256)


# ---------------------------------------------------------------- bad input


def test_unfitted_use_raises():
    std = ModalityStandardizer()
    assert not std.is_fitted
    for call in (lambda: std.transform([0.1], "text"), std.to_dict, lambda: std.keys_):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    assert issubclass(NotFittedError, ValueError)


def test_transform_unknown_modalities_name_the_label():
    std = fitted([0.1, 0.2, 0.3, 0.4], ["text", "text", "image", "image"])
    with pytest.raises(ValueError, match="candidate modality 'audio'.*fitted candidate"):
        std.transform([0.1], "audio")
    with pytest.raises(ValueError, match="candidate modality 'audio'"):
        std.transform([0.1, 0.2], ["text", "audio"])
    with pytest.raises(ValueError, match="query modality 'image'.*fitted query modalities"):
        std.transform([0.1], "text", "image")
    with pytest.raises(ValueError, match=r"shape \(1,\) does not match scores \(2,\)"):
        std.transform([0.1, 0.2], ["text"])


@pytest.mark.parametrize(
    "scores, cands, queries, match",
    [
        ([[0.1, 0.2]], ["a", "a"], "text", "scores: expected a 1-D array"),
        ([0.1, np.nan], ["a", "a"], "text", "scores: contains NaN or inf"),
        ([0.1, np.inf], ["a", "a"], "text", "scores: contains NaN or inf"),
        ([0.1, 0.2], ["a"], "text", "candidate_modalities: has 1 labels for 2 rows"),
        ([0.1, 0.2], ["a", ""], "text", "candidate_modalities: label 1"),
        ([0.1, 0.2], ["a", 3], "text", "candidate_modalities: label 1"),
        ([0.1, 0.2], ["a", "a"], ["text"], "query_modalities: has 1 labels for 2 rows"),
        ([0.1, 0.2], ["a", "a"], "", "non-empty string"),
        ([0.1, 0.2], "", "text", "non-empty string"),
    ],
)
def test_fit_bad_input(scores, cands, queries, match):
    with pytest.raises(ValueError, match=match):
        ModalityStandardizer().fit(scores, cands, queries)


def test_constructor_and_fit_transform_errors():
    for bad in (0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="min_std"):
            ModalityStandardizer(min_std=bad)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="dim must be a positive integer"):
            ModalityStandardizer(dim=bad)
    with pytest.raises(ValueError, match="model_id must be a string"):
        ModalityStandardizer(model_id=3)
    std = ModalityStandardizer()
    with pytest.raises(ValueError, match="single query modality"):
        std.fit_transform([0.1, 0.2], ["a", "a"], ["text", "image"])
    assert not std.is_fitted
    z = std.fit_transform([0.1, 0.3], ["a", "a"])
    np.testing.assert_allclose(z, [-1.0, 1.0])


def test_fit_from_mined_pseudo_positives():
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((60, 8)).astype(np.float32)
    corpus[30:] += 2.0  # an "image" cluster away from the "text" one: a modality gap
    labels = np.array(["text"] * 30 + ["image"] * 30)
    res = mine_pseudo_positives(corpus[:30], corpus, labels, exclude=np.arange(30))
    std = ModalityStandardizer(dim=8).fit(*res.pairs())
    assert std.count_ == {("text", "text"): 30, ("text", "image"): 30}
    idx, sc = res.of("image")
    np.testing.assert_allclose(std.mean_[("text", "image")], sc[:, 0].astype(np.float64).mean())
    z = std.transform(sc[:, 0], "image")
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-6


def test_bad_input_keeps_the_previous_fit():
    std = ModalityStandardizer().fit([0.1, 0.3], ["a", "a"])
    with pytest.raises(ValueError, match="NaN"):
        std.fit([0.1, np.nan], ["a", "a"])
    with pytest.raises(ValueError, match="labels for 2 rows"):
        std.partial_fit([0.1, 0.2], ["a"])
    assert std.count_ == {("text", "a"): 2} and std.mean_[("text", "a")] == pytest.approx(0.2)


def test_fallback_warning_points_at_the_caller():
    for call in (ModalityStandardizer().fit, ModalityStandardizer().partial_fit):
        with pytest.warns(UserWarning, match="degenerate") as rec:
            call([0.5], ["a"])
        assert rec[0].filename == __file__
