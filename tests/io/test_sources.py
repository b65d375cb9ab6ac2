"""Grouping by a regex with alternatives and dropping byte-identical held-out duplicates (io.sources)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from survey_cracks.config import DataSource, MaskTrainConfig, load_config
from survey_cracks.io.sources import group_of, list_items

ROOT = Path(__file__).resolve().parents[2]
BRIDGES = ROOT / "configs" / "mask.yaml"


def bridges_source(root: Path, **update) -> DataSource:
    """configs/mask.yaml's uavcrack_bridges entry, pointed at ``root``."""
    entry = next(s for s in yaml.safe_load(BRIDGES.read_text())["sources"] if s["name"] == "uavcrack_bridges")
    return DataSource(**{**entry, "root": root, **update})


def fake_bridges(root: Path) -> dict[str, str]:
    """Tiles named like uavcrack_bridges' (map tiles, dated and IMG_ photo crops), two byte-identical copies."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    stems = ["ckjx0sami000h3968gna85a4n_3", "ckjx0sami000h3968gna85a4n_17", "ckrgo06f07nvs0y7ramr8h7pi_0",
             "20160222_081011_1921_721_00", "20160222_081011_641_721_00", "IMG_0412_1_361_00"]
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.jpg")
        mask = np.zeros((128, 128), np.uint8)
        mask[10:12, 2:30] = 255
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    for copy, of in (("ckrgo06f07nvs0y7ramr8h7pi_9", "ckjx0sami000h3968gna85a4n_3"),
                     ("IMG_0999_1_1_00", "IMG_0412_1_361_00")):
        shutil.copyfile(root / "images" / f"{of}.jpg", root / "images" / f"{copy}.jpg")
        shutil.copyfile(root / "masks" / f"{of}.png", root / "masks" / f"{copy}.png")
    return {"ckjx0sami000h3968gna85a4n_3": "ckjx0sami000h3968gna85a4n",
            "ckjx0sami000h3968gna85a4n_17": "ckjx0sami000h3968gna85a4n",
            "ckrgo06f07nvs0y7ramr8h7pi_0": "ckrgo06f07nvs0y7ramr8h7pi",
            "20160222_081011_1921_721_00": "20160222_081011", "20160222_081011_641_721_00": "20160222_081011",
            "IMG_0412_1_361_00": "IMG_0412"}


def test_bridges_grouping_is_by_map_and_by_photo(tmp_path):
    expected = fake_bridges(tmp_path)
    source = bridges_source(tmp_path)
    assert {stem: group_of(stem, source) for stem in expected} == expected
    # a single-group regex keeps its old meaning, a name it does not match is its own group
    plain = DataSource(name="p", kind="mask_folder", root=tmp_path, group_regex=r"^(.+)-\d+$")
    assert group_of("photo7-12", plain) == "photo7" and group_of("other", plain) == "other"


def test_held_out_duplicates_are_dropped_training_copies_kept(tmp_path):
    fake_bridges(tmp_path)
    held = list_items(bridges_source(tmp_path), seed=0)
    names = sorted(item.path.stem for item in held)
    assert all(item.split == "test" for item in held)  # role: test, so never trained on
    # each pair of identical files counts once: the first by name stays
    assert "ckrgo06f07nvs0y7ramr8h7pi_9" not in names and "IMG_0999_1_1_00" not in names
    assert "ckjx0sami000h3968gna85a4n_3" in names and "IMG_0412_1_361_00" in names
    assert len(names) == 6
    assert len(list_items(bridges_source(tmp_path, drop_duplicates=False), seed=0)) == 8
    # split by group: a held-out copy of a training image goes, the training image stays
    split = bridges_source(tmp_path, role="split", split={"val": 0.5, "test": 0.0})
    items = list_items(split, seed=0)
    train = {i.path.read_bytes() for i in items if i.split == "train"}
    held_bytes = [i.path.read_bytes() for i in items if i.split != "train"]
    assert not train & set(held_bytes) and len(held_bytes) == len(set(held_bytes))
    everything = list_items(bridges_source(tmp_path, role="split", split={"val": 0.5, "test": 0.0},
                                           drop_duplicates=False), seed=0)
    assert [i for i in everything if i.split == "train"] == [i for i in items if i.split == "train"]
    assert len(items) == len(everything) - 2  # a held-out copy of a training tile, one of a held-out tile


def test_mask_config_holds_bridges_out_of_training(needs_shared):
    config = load_config(MaskTrainConfig, BRIDGES)
    source = next(s for s in config.sources if s.name == "uavcrack_bridges")
    items = list_items(source, config.seed)
    assert items and {item.split for item in items} == {"test"}
    assert len(items) == 2500 - 130  # the README's byte-identical duplicates left out
