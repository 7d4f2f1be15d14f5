"""`mmgap reproduce` never reads an image a record places outside the image folder, and says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from _fixtures_data import tiny_image_bytes, write_jsonl_gz

from mmgap_core.cli import main

OUTSIDE = "image path outside the image folder"


def test_escaping_image_paths_are_skipped_and_reported(
    tmp_path, mmqa_standin, tiny_clip, capsys, monkeypatch
):
    from mmgap_core.encoders.open_clip import OpenClipEncoder

    secret = tmp_path / "secret.png"
    secret.write_bytes(tiny_image_bytes("secret"))
    root = tmp_path / "root"
    shutil.copytree(mmqa_standin.root, root)
    gold = {s["doc_id"] for r in mmqa_standin.records.values() for s in r["supporting_context"]}
    victims = [i for i in mmqa_standin.image_records if i not in gold][:2]
    paths = {victims[0]: "../../secret.png", victims[1]: str(secret)}
    records = [
        {**r, "path": paths.get(i, r["path"])} for i, r in mmqa_standin.image_records.items()
    ]
    write_jsonl_gz(root / "MMQA_images.jsonl.gz", records)
    (root / "final_dataset_images" / "link.png").symlink_to(secret)

    seen: list[str] = []
    original = OpenClipEncoder.embed_images

    def spy(self, items, **kw):
        seen.extend(str(x) for x in items)
        return original(self, items, **kw)

    monkeypatch.setattr(OpenClipEncoder, "embed_images", spy)
    out_json = tmp_path / "r.json"
    capsys.readouterr()
    argv = [
        "reproduce",
        "--root",
        root,
        "--model",
        tiny_clip.model_name,
        "--pretrained",
        tiny_clip.checkpoint_path,
        "--model-config",
        tiny_clip.config_path,
        "--device",
        "cpu",
        "--methods",
        "raw,standardize",
        "--no-cache",
        "--no-progress",
        "--json",
        out_json,
    ]
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"2  {OUTSIDE}" in out  # the dataset summary lists the reason and the count
    data = json.loads(out_json.read_text())
    assert data["skipped"]["dataset"][OUTSIDE] == 2
    assert seen, "the encoder embedded no image at all"
    base = (root / "final_dataset_images").resolve()
    assert all(Path(p).resolve().is_relative_to(base) for p in seen)
    assert str(secret) not in {str(Path(p).resolve()) for p in seen}
