"""The model bundle: round trip, integrity hash, and refusal of unsafe content."""

import json
import shutil
import zipfile

import keras
import numpy as np
import pytest

from captioning.bundle import MANIFEST_FILE, MODEL_FILE, load_bundle, save_bundle, verify_bundle
from captioning.errors import BundleError
from captioning.presets import tiny
from captioning.text.vocabulary import Vocabulary
from captioning.training.trainer import build_captioner


@pytest.fixture(scope="module")
def model_and_bundle(tmp_path_factory):
    config = tiny().captioner
    vocabulary = Vocabulary.build(["a red circle above a blue square"], 20, 10)
    model = build_captioner(config, vocabulary)
    path = tmp_path_factory.mktemp("bundles") / "b"
    model_id = save_bundle(model, vocabulary, config, str(path))
    return model, vocabulary, path, model_id


def _images():
    return np.random.default_rng(1).integers(0, 255, (4, 75, 75, 3), dtype=np.uint8)


def test_reloaded_bundle_captions_equal_the_in_memory_model(model_and_bundle):
    model, vocabulary, path, model_id = model_and_bundle
    loaded = load_bundle(str(path), precision="float32")
    assert loaded.model_id == model_id and model_id.startswith("sha256-")
    assert loaded.vocabulary == vocabulary
    before = model.generate(_images(), beam_width=2)
    after = loaded.captioner.generate(_images(), beam_width=2)
    np.testing.assert_array_equal(before.tokens, after.tokens)
    np.testing.assert_allclose(before.scores, after.scores, rtol=1e-5)


def test_bundle_is_self_contained_json_and_weights(model_and_bundle):
    _, _, path, _ = model_and_bundle
    names = sorted(p.name for p in path.iterdir())
    assert names == ["captioner_config.json", "manifest.json", "model.keras", "vocabulary.json"]
    config = json.loads((path / "captioner_config.json").read_text())
    assert config["image"]["image_size"] == 75
    assert not any(p.suffix in (".pkl", ".pickle") for p in path.rglob("*"))


def test_same_content_same_model_id(model_and_bundle, tmp_path):
    _, _, path, model_id = model_and_bundle
    shutil.copytree(path, tmp_path / "copy")
    assert verify_bundle(str(tmp_path / "copy")) == model_id


def test_tampered_bundle_is_refused(model_and_bundle, tmp_path):
    _, _, path, _ = model_and_bundle
    copy = tmp_path / "tampered"
    shutil.copytree(path, copy)
    data = json.loads((copy / "vocabulary.json").read_text())
    data["words"][5], data["words"][6] = data["words"][6], data["words"][5]
    (copy / "vocabulary.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"integrity check: vocabulary\.json was modified"):
        load_bundle(str(copy))


def test_bundle_with_a_lambda_layer_is_refused_even_with_a_valid_hash(model_and_bundle, tmp_path):
    _, _, path, _ = model_and_bundle
    copy = tmp_path / "unsafe"
    shutil.copytree(path, copy)
    # Graft a Lambda layer (arbitrary Python) into the archive's config, then re-sign
    # the bundle so that only the safety check can catch it.
    with zipfile.ZipFile(copy / MODEL_FILE) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    lambda_model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    config["config"]["decoder"]["config"]["evil"] = keras.saving.serialize_keras_object(
        lambda_model
    )
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(copy / MODEL_FILE, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    from captioning.bundle import CONTENT_FILES, _model_id, _sha256

    hashes = {name: _sha256(copy / name) for name in CONTENT_FILES}
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest.update(files=hashes, model_id=_model_id(hashes))
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert verify_bundle(str(copy))  # the hash alone does not object
    with pytest.raises(BundleError, match=r"holds Sequential .*Lambda \(module keras\.layers\)"):
        load_bundle(str(copy))


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(str(tmp_path / "nothing"))


def test_bundle_carries_its_precision_policy(model_and_bundle):
    _, _, path, _ = model_and_bundle
    config = json.loads((path / "captioner_config.json").read_text())
    assert config["generation"]["precision"] == "auto"
    from captioning.precision import resolve_precision

    assert load_bundle(str(path)).precision == resolve_precision("auto")


def test_bundle_loads_in_mixed_bfloat16(model_and_bundle):
    _, _, path, _ = model_and_bundle
    loaded = load_bundle(str(path), precision="mixed_bfloat16")
    assert loaded.precision == "mixed_bfloat16"
    assert loaded.captioner.decoder.gru_cell.compute_dtype == "bfloat16"
    result = loaded.captioner.generate(_images(), beam_width=2)
    assert np.isfinite(np.asarray(result.scores)).all()
