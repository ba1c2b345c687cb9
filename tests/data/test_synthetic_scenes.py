"""Synthetic scenes: deterministic, varied, and impossible to caption without looking."""

import csv
import itertools
import random
from collections import Counter

from captioning.data.synthetic_scenes import COLOURS, SHAPES, SIZES, generate_scenes, sample_scene
from captioning.evaluation.metrics import caption_metrics


def _captions(seed, count):
    rng = random.Random(seed)
    return [sample_scene(rng).caption() for _ in range(count)]


def test_same_seed_same_scenes_different_seed_different(tmp_path):
    first = generate_scenes(tmp_path / "a", count=5, seed=3)
    second = generate_scenes(tmp_path / "b", count=5, seed=3)
    third = generate_scenes(tmp_path / "c", count=5, seed=4)
    assert first.read_text() == second.read_text()
    assert first.read_text() != third.read_text()
    for name in (tmp_path / "a" / "images").iterdir():
        assert name.read_bytes() == (tmp_path / "b" / "images" / name.name).read_bytes()


def test_writes_images_and_csv(tmp_path):
    path = generate_scenes(tmp_path, count=6, seed=1)
    rows = list(csv.DictReader(path.open()))
    assert set(rows[0]) == {"image", "caption"}
    assert len(rows) == 6
    for row in rows:
        assert (tmp_path / "images" / row["image"]).is_file()


def test_vocabulary_of_the_scenes_is_rich_enough():
    assert len(COLOURS) >= 6 and len(SHAPES) >= 4 and len(SIZES) >= 2
    scenes = [sample_scene(random.Random(s)) for s in range(500)]
    counts = Counter(len(scene.objects) for scene in scenes)
    assert set(counts) == {1, 2, 3}
    assert {scene.axis for scene in scenes} == {"vertical", "horizontal"}
    assert len({scene.background for scene in scenes}) > 100
    positions = {(round(o.x), round(o.y)) for scene in scenes for o in scene.objects}
    assert len(positions) > 300


def test_2000_scenes_hold_at_least_300_distinct_captions():
    assert len(set(_captions(seed=1, count=2000))) >= 300


def test_relation_words_follow_layout():
    rng = random.Random(5)
    for _ in range(200):
        scene = sample_scene(rng)
        caption = scene.caption()
        objects = scene.objects
        for before, after in itertools.pairwise(objects):
            if scene.axis == "vertical":
                assert "above" in caption and before.y < after.y
            else:
                assert "to the left of" in caption and before.x < after.x


def test_a_model_that_ignores_the_image_scores_badly():
    """The best image-blind answer (the most common training caption) is far from 0.5 BLEU-4."""
    train = _captions(seed=1, count=3000)
    test = _captions(seed=2, count=300)
    blind = Counter(train).most_common(1)[0][0]
    references = {str(i): [caption] for i, caption in enumerate(test)}
    metrics = caption_metrics(references, {key: blind for key in references})
    assert metrics["bleu4"] < 0.15, metrics
