"""``two-view-z``: the centred-cosine scale estimator, the fusion method, evaluation and a
calibrated engine search over a real Chroma store."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _fixtures_clip import SAMPLE_TEXTS as TEXTS

from mmgap_core.background import BackgroundScale
from mmgap_core.background_math import background_location
from mmgap_core.candidates import CandidateBatch, ModalityCandidates
from mmgap_core.centered_background import POOL_SIZES, CenteredBackgroundScale
from mmgap_core.post_processing import centered_cosines, default_n_directions, top_directions
from mmgap_core.evaluation import evaluate_embeddings
from mmgap_core.fusion import make_method
from mmgap_core.simulator import PROFILES, simulate
from mmgap_core.stats import ModalityStandardizer


def unit(rng, *shape):
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def raw_order_pools(rng, q=40, k=60):
    """Centred cosines in a raw-order pool: noisy, not sorted (as a raw pool's are)."""
    base = -np.sort(-rng.normal(0.0, 0.05, (q, k)), axis=1)
    return base + rng.normal(0.0, 0.03, (q, k))


# ---------------------------------------------------------------- the estimator
def test_scales_are_fitted_per_pool_size_and_interpolated_in_log_k():
    rng = np.random.default_rng(0)
    est = CenteredBackgroundScale().fit({"image": raw_order_pools(rng)}, "text", {"image": 500})
    fitted = sorted(g for (_q, _m, g) in est.count_)
    assert fitted == [g for g in POOL_SIZES if g <= 60] + [60]
    s10, s15, s20 = (est.scale("image", "text", k) for k in (10, 15, 20))
    assert s10 == pytest.approx(np.exp(est.log_scale_sum_[("text", "image", 10)] / 40))
    # between grid points: linear in log k of the log scale
    s12 = est.scale("image", "text", 12)
    t = (np.log(12) - np.log(10)) / (np.log(15) - np.log(10))
    assert s12 == pytest.approx(np.exp((1 - t) * np.log(s10) + t * np.log(s15)))
    assert min(s10, s20) <= s15 <= max(s10, s20) or s12 > 0
    # clamped outside the fitted grid
    assert est.scale("image", "text", 3) == est.scale("image", "text", 6)
    assert est.scale("image", "text", 500) == est.scale("image", "text", 60)


def test_a_raw_pool_of_simulated_clip_embeddings_spreads_more_when_short():
    """The selection effect the pool-size grid exists for (module docstring)."""
    d = simulate(PROFILES["clip-like"])
    text, image = d.corpus[d.modalities == "text"], d.corpus[d.modalities == "image"]
    q = d.queries[:100]
    top = np.argsort(-(q @ image.T), axis=1)[:, :200]
    cos = centered_cosines(q, text.mean(0), image[top], image.mean(0))
    est = CenteredBackgroundScale().fit({"image": cos}, "text", {"image": image.shape[0]})
    assert est.scale("image", "text", 10) > 1.3 * est.scale("image", "text", 200)


def test_post_processed_cosines_remove_the_mean_and_the_top_directions():
    rng = np.random.default_rng(8)
    d = 32
    texts = rng.standard_normal((500, d)) * np.r_[10.0, 5.0, np.full(d - 2, 0.5)] + 0.3
    images = rng.standard_normal((400, d)) * 0.5 - 0.2
    mt, mi = texts.mean(0), images.mean(0)
    ut, ui = top_directions(texts, mt, 3), top_directions(images, mi, 2)
    np.testing.assert_allclose(ut @ ut.T, np.eye(3), atol=1e-12)
    # the largest-variance axes of the texts come first
    assert np.argmax(np.abs(ut[0])) == 0 and np.argmax(np.abs(ut[1])) == 1
    q = rng.standard_normal((4, d))
    c = rng.standard_normal((4, 7, d)).astype(np.float32)

    def post(x, mean, u):  # all-but-the-top, written out
        y = x - mean
        y = y - (y @ u.T) @ u
        return y / np.linalg.norm(y, axis=-1, keepdims=True)

    want = np.einsum("qd,qkd->qk", post(q, mt, ut), post(c.astype(np.float64), mi, ui))
    got = centered_cosines(q, mt, c, mi, directions=(ut, ui))
    np.testing.assert_allclose(got, want, atol=1e-6)
    none = np.zeros((0, d))
    want0 = np.einsum("qd,qkd->qk", post(q, mt, none), post(c.astype(np.float64), mi, none))
    np.testing.assert_allclose(centered_cosines(q, mt, c, mi), want0, atol=1e-6)
    assert default_n_directions(512) == 5 and default_n_directions(64) == 1


def test_transform_is_the_background_z_of_the_sorted_pool_in_raw_order():
    rng = np.random.default_rng(1)
    est = CenteredBackgroundScale().fit({"image": raw_order_pools(rng)}, "text", {"image": 500})
    pools = raw_order_pools(rng, q=5, k=20)
    pools[3, 15:] = -np.inf  # a short row
    z = est.transform(pools, "image", "text")
    for r in range(5):
        n = 15 if r == 3 else 20
        row = pools[r, :n]
        sigma = est.scale("image", "text", n)
        mu = background_location(-np.sort(-row)[None, :], sigma, 500)[0]
        np.testing.assert_allclose(z[r, :n], (row - mu) / sigma)
    assert np.isneginf(z[3, 15:]).all()


def test_partial_fit_merges_exactly_and_the_dict_round_trips():
    rng = np.random.default_rng(2)
    a, b = raw_order_pools(rng), raw_order_pools(rng)
    whole = CenteredBackgroundScale("m", 8).fit({"image": np.vstack([a, b])}, "text", {"image": 9})
    parts = CenteredBackgroundScale("m", 8).fit({"image": a}, "text", {"image": 9})
    parts.partial_fit({"image": b}, "text", {"image": 9})
    for k in (6, 10, 33, 60):
        assert parts.scale("image", "text", k) == pytest.approx(whole.scale("image", "text", k))
    again = CenteredBackgroundScale.from_dict(json.loads(json.dumps(whole.to_dict())))
    assert again.to_dict() == whole.to_dict()
    assert again.model_id == "m" and again.dim == 8


@pytest.mark.parametrize(
    ("pools", "sizes", "words"),
    [
        ({"image": np.full((2, 10), np.nan)}, {"image": 50}, "NaN"),
        ({"image": np.array([[0.1, -np.inf, 0.2]])}, {"image": 50}, "padding must come after"),
        ({"image": np.zeros(10)}, {"image": 50}, "expected centred cosines"),
        ({"image": np.zeros((2, 10))}, {}, "no size for candidate modality 'image'"),
        (None, {}, "non-empty mapping"),
    ],
)
def test_bad_pools_are_refused_and_change_nothing(pools, sizes, words):
    rng = np.random.default_rng(3)
    est = CenteredBackgroundScale().fit({"image": raw_order_pools(rng)}, "text", {"image": 500})
    before = est.to_dict()
    # a good modality beside the bad one: nothing of either may be kept
    given = {} if pools is None else {"text": raw_order_pools(rng), **pools}
    with pytest.raises(ValueError, match=words):
        est.partial_fit(given, "text", {"text": 500, **sizes})
    assert est.to_dict() == before
    with pytest.raises(ValueError, match=words):  # a refit keeps the old keys too
        est.fit(given, "text", {"text": 500, **sizes})
    assert est.to_dict() == before


def test_a_key_of_a_few_items_is_calibrated_without_a_scale():
    rng = np.random.default_rng(6)
    pools = {"image": raw_order_pools(rng), "text": raw_order_pools(rng, k=2)}
    est = CenteredBackgroundScale().fit(pools, "text", {"image": 500, "text": 3})
    assert est.has("text", "text") and not est.has_scale("text", "text")
    assert est.has("image", "text") and est.has_scale("image", "text")
    assert not est.has("image", "image")


def test_self_excluded_pools_one_short_of_their_width_are_fitted():
    rng = np.random.default_rng(9)
    pools = raw_order_pools(rng, k=6)
    pools[:, 5] = -np.inf  # 6 items asked for, the query itself dropped: 5 in every row
    est = CenteredBackgroundScale().fit({"text": pools}, "text", {"text": 6})
    assert sorted(g for (_q, _m, g) in est.count_) == [5]


def test_an_unfitted_key_and_malformed_data_say_what_is_wrong():
    rng = np.random.default_rng(4)
    est = CenteredBackgroundScale().fit({"image": raw_order_pools(rng)}, "text", {"image": 500})
    with pytest.raises(KeyError, match="no centred background scale for 'text' candidates"):
        est.scale("text", "text", 10)
    data = est.to_dict()
    data["keys"][0]["log_scale_sum"] = float("inf")
    with pytest.raises(ValueError, match=r"keys\[0\].log_scale_sum is not finite"):
        CenteredBackgroundScale.from_dict(data)
    with pytest.raises(ValueError, match="expected format"):
        CenteredBackgroundScale.from_dict({"format": "other"})


# ---------------------------------------------------------------- the fusion method
def small_batch(rng, q=6, k=12, dim=16, short_row=None):
    means = {"text": unit(rng, dim) * 0.5, "image": unit(rng, dim) * 0.5}
    queries = unit(rng, q, dim)
    embs = {m: unit(rng, q, k, dim) for m in means}
    lists = {}
    for m in means:
        scores = np.einsum("qd,qkd->qk", queries, embs[m])
        order = np.argsort(-scores, axis=1)
        scores = np.take_along_axis(scores, order, 1)
        embs[m] = np.take_along_axis(embs[m], order[:, :, None], 1)
        ids = np.tile(np.arange(k), (q, 1))
        if short_row is not None and m == "image":
            ids[short_row, 4:] = -1
            scores[short_row, 4:] = -np.inf
        lists[m] = ModalityCandidates(ids, scores.astype(np.float32))
    batch = CandidateBatch(
        "text",
        lists,
        query_embeddings=queries,
        candidate_embeddings=lambda m, ids: embs[m][
            np.arange(ids.shape[0])[:, None], np.maximum(ids, 0)
        ],
    )
    return batch, means, embs


def test_score_is_the_mean_of_the_raw_and_centred_background_z():
    rng = np.random.default_rng(5)
    batch, means, embs = small_batch(rng, short_row=2)
    sizes = {"text": 400, "image": 400}
    raw_lists = {m: rng.normal(0.2, 0.05, (50, 40)) for m in means}
    raw_lists = {m: -np.sort(-v, axis=1) for m, v in raw_lists.items()}
    bg = BackgroundScale().fit(raw_lists, "text", sizes)
    cs = CenteredBackgroundScale().fit(
        {m: raw_order_pools(rng, 50, 40) for m in means}, "text", sizes
    )
    std = ModalityStandardizer().fit(
        np.concatenate([raw_lists["text"][:, 0], raw_lists["image"][:, 0]]),
        ["text"] * 50 + ["image"] * 50,
        "text",
    )
    method = make_method(
        "two-view-z",
        standardizer=std,
        background_scale=bg,
        centered_scale=cs,
        center_means=means,
        corpus_sizes=sizes,
    )
    z_raw = make_method(
        "background-z", standardizer=std, background_scale=bg, corpus_sizes=sizes
    ).score(batch)
    got = method.score(batch)
    for m in means:
        c = batch.lists[m]
        cos = centered_cosines(batch.query_embeddings, means["text"], embs[m], means[m])
        z_c = cs.transform(np.where(c.valid, cos, -np.inf), m, "text", n_items=sizes[m])
        for r in range(batch.n_queries):
            if r == 2:  # a 4-item image list: no background to locate, the raw view alone
                np.testing.assert_array_equal(got[m][r], z_raw[m][r])
            else:
                np.testing.assert_allclose(got[m][r], 0.5 * (z_raw[m][r] + z_c[r]))
    fused = method.fuse(batch, 5)
    assert fused.scores.shape == (batch.n_queries, 5)


def test_a_modality_without_a_second_view_scale_keeps_the_raw_view():
    rng = np.random.default_rng(7)
    batch, means, _ = small_batch(rng)
    sizes = {"text": 400, "image": 400}
    raw_lists = {m: -np.sort(-rng.normal(0.2, 0.05, (50, 40)), axis=1) for m in means}
    bg = BackgroundScale().fit(raw_lists, "text", sizes)
    # the text pools were too short to fit a scale (a modality of a few items at calibration)
    pools = {"image": raw_order_pools(rng, 50, 40), "text": raw_order_pools(rng, 50, 2)}
    cs = CenteredBackgroundScale().fit(pools, "text", sizes)
    std = ModalityStandardizer().fit(
        np.r_[raw_lists["text"][:, 0], raw_lists["image"][:, 0]],
        ["text"] * 50 + ["image"] * 50,
        "text",
    )
    parts = dict(standardizer=std, background_scale=bg, corpus_sizes=sizes)
    got = make_method("two-view-z", centered_scale=cs, center_means=means, **parts).score(batch)
    want = make_method("background-z", **parts).score(batch)
    np.testing.assert_array_equal(got["text"], want["text"])  # the raw view alone
    assert not np.allclose(got["image"], want["image"])  # both views: its own list decides


def test_it_is_not_built_without_what_it_needs():
    with pytest.raises(ValueError, match="needs centred background scales"):
        make_method(
            "two-view-z",
            standardizer=object(),
            background_scale=object(),
            center_means={"text": np.zeros(4)},
        )


# ---------------------------------------------------------------- ranking quality
def test_it_lifts_cross_modal_recall_over_background_z_on_a_simulated_world():
    d = simulate(PROFILES["clip-like"])
    qrels = np.stack(
        [np.arange(len(d.relevant_rows)), d.relevant_rows, np.ones_like(d.relevant_rows)], 1
    )
    rep = evaluate_embeddings(
        d.queries,
        d.corpus,
        d.modalities,
        qrels,
        query_modality=d.query_modality,
        methods=["background-z", "two-view-z"],
        pool=50,
    )
    cross, same = "image", "text"  # relevant item's modality; the queries are texts
    new, old = (rep.value(m, cross, "recall@10") for m in ("two-view-z", "background-z"))
    assert new > old + 0.03
    assert (
        rep.value("two-view-z", same, "recall@10")
        >= rep.value("background-z", same, "recall@10") - 0.01
    )


# ---------------------------------------------------------------- a calibrated store
@pytest.fixture
def indexed(engine, sample_images):
    engine.index(texts=TEXTS, images=sample_images, progress=False, batch_size=4)
    return engine


def test_calibration_fits_the_centred_scale_and_a_search_uses_it(indexed, sample_images):
    from mmgap_core.engine import RetrievalEngine

    indexed.calibrate(progress=False)
    record = indexed.calibration
    assert record.centered is not None
    assert record.centered.has("image", "text") and record.centered.has("text", "image")
    # each modality's top principal directions: orthonormal, default_n_directions(d) of them
    for m in ("text", "image"):
        u = record.center_directions[m]
        assert u.shape == (default_n_directions(indexed.store.dim), indexed.store.dim)
        np.testing.assert_allclose(u @ u.T, np.eye(len(u)), atol=1e-9)
    n = len(TEXTS) + len(sample_images)
    res = indexed.search("a cat sleeping", k=n, method="two-view-z")
    assert res.method == "two-view-z" and len(res) == n
    assert {h.modality for h in res} == {"text", "image"}
    scores = [h.score for h in res]
    assert scores == sorted(scores, reverse=True)
    # the same numbers from the record's parts, on the store's own answer with embeddings
    vec, _ = indexed.embed_query("a cat sleeping")
    counts = indexed.store.counts()
    hits = indexed.store.query_per_modality(vec.reshape(1, -1), counts, include_embeddings=True)
    method = make_method(
        "two-view-z",
        standardizer=record.standardizer,
        background_scale=record.background,
        centered_scale=record.centered,
        center_means=record.center_means,
        center_directions=record.center_directions,
        corpus_sizes=counts,
    )
    want = method.fuse(CandidateBatch.from_hits(hits, "text", vec.reshape(1, -1)), n)
    assert [h.score for h in res] == pytest.approx(want.scores[0].tolist(), abs=1e-5)
    # saved with the store
    again = RetrievalEngine(indexed.store, indexed.encoder)
    assert again.calibration.centered.to_dict() == record.centered.to_dict()


def test_a_record_from_before_the_default_ranks_by_background_z_and_says_so(indexed, tmp_path):
    indexed.calibrate(progress=False)
    data = json.loads(indexed.export_calibration(tmp_path / "cal.json").read_text())
    for key in ("centered_background_scale", "center_directions"):
        data.pop(key)  # as a record written before two-view-z existed
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    indexed.import_calibration(old)
    assert indexed.calibration.centered is None
    res = indexed.search("a cat", k=3)
    assert res.method == "background-z" and len(res) == 3
    assert any("predates two-view-z" in n and "recalibrate" in n for n in res.warnings)
    want = indexed.search("a cat", k=3, method="background-z")
    assert [h.id for h in res] == [h.id for h in want]
    indexed.calibrate(progress=False)
    again = indexed.search("a cat", k=3)
    assert again.method == "two-view-z" and not any("predates" in n for n in again.warnings)


def test_a_malformed_centred_scale_is_refused_and_nothing_is_stored(indexed, tmp_path):
    from mmgap_core.calibration import CalibrationFormatError

    indexed.calibrate(progress=False)
    before = indexed.calibration_data()
    data = json.loads(indexed.export_calibration(tmp_path / "cal.json").read_text())
    data["centered_background_scale"]["keys"] = "garbage"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(CalibrationFormatError, match="'keys' must be a list"):
        indexed.import_calibration(bad)
    assert indexed.calibration_data() == before == indexed.store.load_calibration()


def test_online_calibration_adds_each_search_to_the_second_view(indexed):
    from mmgap_core.engine import RetrievalEngine

    indexed.calibrate(progress=False)
    centred = indexed.calibration.centered
    n = indexed.store.counts()
    width = min(n.values())
    before = dict(centred.count_)
    indexed.online_calibration = True
    indexed.persist_every = 2
    for q in ("a cat", "coffee", "rocket"):
        indexed.search(q, k=3, k_per_modality=width)
    grown = {key for key, c in centred.count_.items() if c != before.get(key)}
    # one pool per modality a search, at every grid size up to its width (and the width itself)
    assert grown == {("text", m, g) for m in n for g in (*POOL_SIZES, width) if g <= width}
    assert all(centred.count_[key] == before.get(key, 0) + 3 for key in grown)
    stored = RetrievalEngine(indexed.store, indexed.encoder).calibration.centered
    assert all(stored.count_[key] == before.get(key, 0) + 2 for key in grown)  # every 2nd search
    # a background-z search asks for no embeddings: the second view is left as it is
    counts = dict(centred.count_)
    indexed.search("a cat", k=3, method="background-z")
    assert centred.count_ == counts


def test_online_calibration_of_a_record_without_background_scales(indexed):
    """A record from before background-z: its online update feeds the paper's statistics only."""
    from dataclasses import replace

    indexed.calibrate(progress=False)
    old = replace(indexed.calibration, background=None, centered=None, center_directions=None)
    lists = {m: np.array([[0.3, 0.2, 0.1]]) for m in ("text", "image")}
    n0 = old.standardizer.count_[("text", "image")]
    assert old.add_search(lists, "text", {"text": 10, "image": 10})
    assert old.standardizer.count_[("text", "image")] == n0 + 1
