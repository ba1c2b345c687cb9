"""Streaming samples of a captions table: true lowest/highest across files, uniform random.

The tables are committed Delta tables; the sampler gets the data files of their latest
version, as the report gives it them."""

from __future__ import annotations

import numpy as np
import pytest

from captioning import run_layout
from captioning.errors import UserError
from captioning.reports.sampling import ALL, HIGHEST, LOWEST, RANDOM, sample_captions
from tests.reports.conftest import caption_row, write_table


def _table(tmp_path, scores, shards=3):
    rows = [caption_row(f"/images/{i:05d}.jpg", f"caption {i}", s) for i, s in enumerate(scores)]
    table = run_layout.captions_table(str(tmp_path / "run"))
    files = write_table(table, rows, run_layout.CAPTIONS_SCHEMA, shards)
    assert len(files) == shards
    return files


def _uris(rows, group):
    return {row.image_uri for row in rows if group in row.groups}


def test_picks_the_true_lowest_and_highest_across_files_and_batches(tmp_path):
    rng = np.random.default_rng(3)
    # float32, as the table stores them, so the reference sort sees the same values.
    scores = rng.normal(-1.0, 0.5, size=9_000).astype(np.float32)
    files = _table(tmp_path, scores)
    # Batches of 250 rows: the extremes are spread over 36 batches in 3 files.
    sample = sample_captions(files, lowest=40, highest=30, random=50, seed=1, batch_size=250)

    order = np.argsort(scores, kind="stable")
    assert _uris(sample.rows, LOWEST) == {f"/images/{i:05d}.jpg" for i in order[:40]}
    assert _uris(sample.rows, HIGHEST) == {f"/images/{i:05d}.jpg" for i in order[-30:]}
    assert len(_uris(sample.rows, RANDOM)) == 50
    assert sample.total_rows == 9_000 and not sample.complete
    assert sample.score_min == pytest.approx(float(scores.min()))
    assert sample.score_max == pytest.approx(float(scores.max()))
    assert sample.score_mean == pytest.approx(float(scores.astype(np.float64).mean()), rel=1e-6)
    assert sample.model_ids == {"sha256-test": 9_000}
    shown = [row.score for row in sample.rows]
    assert shown == sorted(shown), "the gallery starts lowest first"


def test_a_row_in_two_samples_is_shown_once_with_both_groups(tmp_path):
    files = _table(tmp_path, [-float(i) for i in range(100)], shards=2)
    sample = sample_captions(files, lowest=5, highest=5, random=80, seed=0, batch_size=7)
    uris = [row.image_uri for row in sample.rows]
    assert len(uris) == len(set(uris))
    both = [row for row in sample.rows if len(row.groups) > 1]
    # (80 random rows of 100 miss all 10 extremes with probability C(90,80)/C(100,80) < 1e-8.)
    assert both
    assert all(RANDOM in row.groups for row in both)


def test_random_sample_is_uniform(tmp_path):
    """Each of 40 rows lands in a 4-row sample with probability 1/10 whatever its place."""
    files = _table(tmp_path, np.linspace(-2, 0, 40), shards=4)
    trials = 400
    hits = np.zeros(40)
    for seed in range(trials):
        sample = sample_captions(files, lowest=0, highest=0, random=4, seed=seed, batch_size=6)
        picked = sorted(int(row.image_uri[-9:-4]) for row in sample.rows)
        assert len(picked) == 4
        hits[picked] += 1
    expected = trials * 4 / 40
    chi_square = float(((hits - expected) ** 2 / expected).sum())
    # 39 degrees of freedom: P(chi2 > 80) < 1e-4, so a fair sampler essentially never fails,
    # while one biased towards the first or last file or batch does.
    assert chi_square < 80, hits
    assert hits[:20].sum() == pytest.approx(hits[20:].sum(), rel=0.2)


def test_small_tables_are_shown_whole(tmp_path):
    files = _table(tmp_path, [-0.3, -0.1, -0.2, float("nan")], shards=2)
    sample = sample_captions(files, lowest=2, highest=1, random=1)
    assert sample.complete and sample.total_rows == 4
    assert [row.score for row in sample.rows][:3] == pytest.approx([-0.3, -0.2, -0.1])
    assert np.isnan(sample.rows[-1].score), "a row without a usable score is kept, last"
    assert all(row.groups == [ALL] for row in sample.rows)
    assert sample.rows[0].alternatives == [("caption 0 again", pytest.approx(-0.8))]


def test_a_table_without_scores_is_refused(tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    from captioning import tables

    table = str(tmp_path / "run" / "captions")
    write_deltalake(table, pa.table({"image_uri": ["a"], "caption": ["b"]}))
    with pytest.raises(UserError, match="not a captions table: no column score"):
        sample_captions(tables.committed_files(table), 1, 1, 1)


def test_a_table_without_files_is_an_empty_sample(tmp_path):
    table = run_layout.captions_table(str(tmp_path / "run"))
    assert write_table(table, [], run_layout.CAPTIONS_SCHEMA, 1) == []
    sample = sample_captions([], 5, 5, 5)
    assert sample.rows == [] and sample.total_rows == 0 and sample.complete
