"""A training run that lives on gs:// (against a local GCS emulator): the checkpoint,
history and bundle are uploaded, and a rerun on a fresh working copy resumes from them."""

from __future__ import annotations

import dataclasses

from tests.conftest import GCS_BUCKET


def test_checkpoints_and_bundle_go_to_gs_and_a_rerun_resumes_from_them(gcs, scenes):
    from captioning.bundle import load_bundle
    from captioning.presets import tiny
    from captioning.training.trainer import train, weights_fingerprint

    out = f"gs://{GCS_BUCKET}/models/tiny"
    config = dataclasses.replace(tiny(), epochs=2)
    first = train(str(scenes / "captions.csv"), str(scenes / "images"), out, config)

    names = {blob.name for blob in gcs.client.list_blobs(GCS_BUCKET, prefix="models/")}
    run = "models/tiny.run"
    assert {
        "models/tiny/manifest.json",
        "models/tiny/model.keras",
        f"{run}/checkpoint/training_metadata.json",
        f"{run}/checkpoint/latest.weights.h5",
        f"{run}/history.csv",
        f"{run}/history.png",
        f"{run}/train_config.json",
    } <= names
    assert any(name.startswith(f"{run}/tensorboard/") for name in names)
    assert not any(name.startswith(f"{run}/cache/") for name in names)
    loaded = load_bundle(out, precision="float32")
    assert loaded.model_id == first.model_id
    assert weights_fingerprint(loaded.captioner) == first.weights_fingerprint

    # Nothing local is reused: the working copy is a fresh temporary directory, so the
    # resume can only come from what is in the bucket.
    longer = dataclasses.replace(config, epochs=3)
    second = train(str(scenes / "captions.csv"), str(scenes / "images"), out, longer)
    assert second.resumed_from is not None and second.resumed_from["epoch"] == 2
    assert second.epochs_run == 1
    history = gcs.blob(f"{run}/history.csv").download_as_text().strip().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2"]
