"""The calibration record: JSON round trip, and every malformed file refused with one clear line."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest

from mmgap_core.calibration import (
    CalibrationFormatError,
    CalibrationRecord,
    NotCalibratedError,
    Provenance,
    read_calibration_file,
    write_calibration_file,
)
from mmgap_core.fusion import method_class
from mmgap_core.stats import ModalityStandardizer

MODEL = "open_clip:ViT-B-32:laion2b_s34b_b79k"
DIM = 4


def make_record(model_id: str | None = MODEL, dim: int | None = DIM) -> CalibrationRecord:
    rng = np.random.default_rng(0)
    std = ModalityStandardizer(model_id=model_id, dim=dim)
    for qm in ("text", "image"):
        std.partial_fit(rng.normal(0.3, 0.05, 40), "text", qm)
        std.partial_fit(rng.normal(0.2, 0.04, 40), "image", qm)
    means = {"text": rng.normal(size=DIM), "image": rng.normal(size=DIM)}
    provenance = Provenance(
        model_id=model_id,
        dim=dim,
        source="store sample (self-excluded)",
        mining="exact",
        fitted_at="2025-01-01T00:00:00Z",
        calibration_queries={"text": 40, "image": 40},
    )
    return CalibrationRecord(std, {"text": 100, "image": 50}, means, provenance)


def test_round_trip_through_json_is_equal():
    record = make_record()
    data = json.loads(json.dumps(record.to_dict()))
    again = CalibrationRecord.from_dict(data)
    assert again == record
    assert again.to_dict() == record.to_dict()
    assert again.model_id == MODEL and again.dim == DIM
    assert again.corpus_sizes == {"text": 100, "image": 50}
    np.testing.assert_array_equal(again.center_means["text"], record.center_means["text"])
    assert again.standardizer.params("text", "image") == record.standardizer.params("text", "image")
    assert again.provenance == record.provenance


def test_round_trip_without_means_or_model():
    record = CalibrationRecord(
        make_record(None, None).standardizer, {"text": 3}, None, Provenance()
    )
    assert CalibrationRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_file_round_trip(tmp_path):
    record = make_record()
    path = write_calibration_file(record, tmp_path / "cal.json")
    assert read_calibration_file(path) == record


def _set(path: str, value):
    """A mutation setting ``data[a][b]... = value`` (``None`` value with ``del:`` deletes)."""

    def apply(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value == "<delete>":
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


MALFORMED = [
    # (mutation, words the message must contain)
    (_set("corpus_sizes", "garbage"), "corpus_sizes must be an object"),
    (_set("corpus_sizes", {"text": -1}), "corpus_sizes['text'] must be a non-negative integer"),
    (_set("corpus_sizes", {"text": 1.5}), "corpus_sizes['text']"),
    (_set("corpus_sizes", {"text": True}), "corpus_sizes['text']"),
    (_set("corpus_sizes", "<delete>"), "'corpus_sizes' is missing"),
    (_set("standardizer", "<delete>"), "'standardizer' is missing"),
    (_set("standardizer", [1, 2]), "standardizer must be an object"),
    (_set("standardizer.model_id", None), "fitted for model null but the record is for model"),
    (_set("standardizer.dim", None), "fitted for dimension null"),
    (_set("standardizer.model_id", "someone-else"), "fitted for model 'someone-else'"),
    (_set("standardizer.stats.0.count", float("inf")), "count must be a positive integer"),
    (_set("standardizer.stats.0.count", 0), "count must be a positive integer"),
    (_set("standardizer.stats.0.count", "3"), "count must be a positive integer"),
    (_set("standardizer.stats.0.mean", float("nan")), "mean must be a finite number"),
    (_set("standardizer.stats.0.m2", -1.0), "m2 must be >= 0"),
    (_set("standardizer.stats.0.query_modality", ""), "query_modality must be a non-empty"),
    (_set("standardizer.stats.0.fallback", "no"), "fallback must be a boolean"),
    (_set("standardizer.stats", []), "standardizer.stats must be a non-empty list"),
    (_set("standardizer.format", "other"), "standardizer is not 'mmgap.standardizer'"),
    (_set("standardizer.min_std", -1), "min_std must be positive"),
    (_set("format", "other"), "not mmgap calibration data"),
    (_set("version", 2), "version is number 2"),
    (_set("dim", "4"), "dim must be a positive integer"),
    (_set("model_id", 7), "model_id must be a string or null"),
    (_set("source", ["x"]), "source must be a string or null"),
    (_set("center_means", "x"), "center_means must be null or an object"),
    (_set("center_means.text", [1.0, 2.0]), "has 2 values, expected 4"),
    (_set("center_means.text", [1.0, "a", 2.0, 3.0]), "must be a non-empty list of numbers"),
    (_set("center_means.text", [1.0, float("inf"), 2.0, 3.0]), "contains NaN or inf"),
    (_set("calibration_queries", {"text": "many"}), "calibration_queries['text']"),
]


@pytest.mark.parametrize(("mutate", "words"), MALFORMED)
def test_malformed_data_is_refused_with_one_line(mutate, words):
    data = make_record().to_dict()
    mutate(data)
    with pytest.raises(CalibrationFormatError) as info:
        CalibrationRecord.from_dict(data)
    message = str(info.value)
    assert words in message
    assert "\n" not in message and message.startswith("calibration data: ")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("data", [None, [1, 2], "text", 3])
def test_non_objects_are_refused(data):
    with pytest.raises(CalibrationFormatError, match="expected a JSON object"):
        CalibrationRecord.from_dict(data)


def test_deep_nesting_is_described_not_printed():
    data = make_record().to_dict()
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    data["corpus_sizes"] = nested
    with pytest.raises(CalibrationFormatError, match="got a list of 1 items"):
        CalibrationRecord.from_dict(data)


FILES = [
    (
        '{"format": "mmgap.calibration", "version": 1, "corpus_sizes": {}, "count": 1e999}',
        "missing",
    ),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("{not json", "not JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
]


@pytest.mark.parametrize(("content", "words"), FILES)
def test_unreadable_files_give_one_line(tmp_path, content, words):
    path = tmp_path / "cal.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CalibrationFormatError) as info:
        read_calibration_file(path)
    assert words in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_count_1e999_in_a_file(tmp_path):
    text = json.dumps(make_record().to_dict()).replace('"count": 40', '"count": 1e999', 1)
    path = tmp_path / "cal.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CalibrationFormatError, match=r"count must be a positive integer, got"):
        read_calibration_file(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CalibrationFormatError, match="cannot read calibration file"):
        read_calibration_file(tmp_path / "nope.json")
    with pytest.raises(CalibrationFormatError, match="not a regular file"):
        read_calibration_file(tmp_path)


def test_check_compatible_refuses_another_model_and_dimension():
    record = make_record()
    record.check_compatible(MODEL, DIM)
    record.check_compatible(None, None)
    with pytest.raises(ValueError, match="fitted for model"):
        record.check_compatible("open_clip:other", DIM)
    with pytest.raises(ValueError, match="dimension"):
        record.check_compatible(MODEL, DIM + 1)


def test_method_needs_are_checked_against_the_record():
    record = make_record()
    record.check_method(method_class("standardize"), "standardize", "text")
    record.check_method(method_class("center"), "center", "audio")  # center reads means only
    with pytest.raises(NotCalibratedError, match="--query-modalities audio"):
        record.check_method(method_class("standardize"), "standardize", "audio")
    no_means = CalibrationRecord(record.standardizer, record.corpus_sizes, None, record.provenance)
    with pytest.raises(NotCalibratedError, match="modality means"):
        no_means.check_method(method_class("center"), "center", "text")
    assert record.missing_candidates("text", ["text", "image", "audio"]) == ["audio"]
    assert record.grown({"text": 151, "image": 75}, 0.5) == ["text: 100 -> 151"]


def test_records_do_not_share_state_after_copy():
    record = make_record()
    data = record.to_dict()
    twin = CalibrationRecord.from_dict(copy.deepcopy(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        twin.standardizer.partial_fit(np.asarray([0.9]), ["image"], "text")
    assert twin != record and CalibrationRecord.from_dict(data) == record
