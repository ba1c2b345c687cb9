"""What the nightly job trusts: only the exact classes real bundles hold, model ids that
pin the files' contents, and a private staging cache that notices a replaced bundle."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

import keras
import pytest

from captioning import storage
from captioning.bundle import (
    ALLOWED_CLASSES,
    CONTENT_FILES,
    MANIFEST_FILE,
    MODEL_FILE,
    VOCABULARY_FILE,
    _classes_in,
    _model_id,
    _sha256,
    check_model_archive,
    load_bundle,
    save_bundle,
    verify_bundle,
)
from captioning.errors import BundleError, UserError
from captioning.presets import demo, production, tiny
from captioning.text.vocabulary import Vocabulary
from captioning.training.trainer import build_captioner, compile_captioner
from pipelines.bundle_staging import check_model_id, stage_bundle
from tests.conftest import GCS_BUCKET as BUCKET


def _bundle(out: Path, captions: list[str]) -> tuple[Path, str]:
    config = tiny().captioner
    vocabulary = Vocabulary.build(captions, 20, 10)
    model = build_captioner(config, vocabulary)
    return out, save_bundle(model, vocabulary, config, str(out))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Two real tiny bundles with different content (so different model ids)."""
    root = tmp_path_factory.mktemp("trust")
    return {
        "a": _bundle(root / "a", ["a red circle above a blue square"]),
        "b": _bundle(root / "b", ["a green triangle left of a yellow star"]),
    }


def _resign(bundle: Path, model_id: str | None = None) -> str:
    """Re-hash every file into the manifest, as a forger would; returns the new model id.
    ``model_id`` writes that id instead of the true one."""
    hashes = {name: _sha256(bundle / name) for name in CONTENT_FILES}
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    true_id = _model_id(hashes)
    manifest.update(files=hashes, model_id=model_id or true_id)
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))
    return true_id


def _forge(source: Path, out: Path) -> str:
    """A copy whose vocabulary was edited and whose manifest was re-hashed to match."""
    shutil.copytree(source, out)
    data = json.loads((out / VOCABULARY_FILE).read_text())
    data["words"][5], data["words"][6] = data["words"][6], data["words"][5]
    (out / VOCABULARY_FILE).write_text(json.dumps(data))
    return _resign(out)


def _edit_model_config(bundle: Path, edit) -> None:
    with zipfile.ZipFile(bundle / MODEL_FILE) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(bundle / MODEL_FILE, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)


def _upload(local: Path, prefix: str) -> str:
    uri = f"gs://{BUCKET}/{prefix}"
    storage.upload_tree(local, uri)
    return uri


# --- Pinning the model id -----------------------------------------------------------


def test_a_forged_bundle_verifies_but_gets_a_new_model_id(bundles, tmp_path):
    source, original = bundles["a"]
    forged_id = _forge(source, tmp_path / "forged")
    assert verify_bundle(str(tmp_path / "forged")) == forged_id != original


def test_pinning_refuses_a_forged_local_bundle(bundles, tmp_path):
    source, original = bundles["a"]
    forged = tmp_path / "forged"
    forged_id = _forge(source, forged)
    message = (
        f"--model {forged} has model id {forged_id}, but --expect-model-id is {original}; "
        "refusing it"
    )
    with pytest.raises(BundleError) as refused:
        stage_bundle(str(forged), expected_model_id=original)
    assert str(refused.value) == message and isinstance(refused.value, UserError)
    with pytest.raises(BundleError, match="refusing it"):
        check_model_id(str(forged), original)
    # Pinned to its own (new) id it passes, and is used in place.
    assert stage_bundle(str(forged), expected_model_id=forged_id) == str(forged)
    assert check_model_id(str(forged), forged_id) == forged_id
    assert stage_bundle(str(forged)) == str(forged)  # unpinned: as before


def test_pinning_refuses_a_forged_remote_bundle(gcs, bundles, tmp_path):
    source, original = bundles["a"]
    forged_id = _forge(source, tmp_path / "forged")
    uri = _upload(tmp_path / "forged", "pin/forged")
    cache = tmp_path / "cache"
    with pytest.raises(BundleError, match=f"has model id {forged_id}, but --expect-model-id is"):
        stage_bundle(uri, expected_model_id=original, cache_dir=cache)
    assert not (cache / original).exists() and not (cache / forged_id).exists()
    staged = stage_bundle(uri, expected_model_id=forged_id, cache_dir=cache)
    assert staged == str(cache / forged_id) and verify_bundle(staged) == forged_id
    assert check_model_id(uri, forged_id, cache_dir=cache) == forged_id


def test_a_manifest_that_keeps_the_pinned_id_over_edited_files_is_refused(gcs, bundles, tmp_path):
    source, original = bundles["a"]
    forged = tmp_path / "forged"
    _forge(source, forged)
    _resign(forged, model_id=original)  # claims the pinned id; the hashes say otherwise
    uri = _upload(forged, "pin/claims-original")
    cache = tmp_path / "cache"
    with pytest.raises(BundleError, match="integrity check: model id mismatch"):
        stage_bundle(uri, expected_model_id=original, cache_dir=cache)
    assert [p.name for p in cache.iterdir()] == []  # neither staged nor left half-staged
    with pytest.raises(BundleError, match="model id mismatch"):
        stage_bundle(str(forged), expected_model_id=original)


# --- Exact classes in model.keras ---------------------------------------------------


def _tfsm_layer() -> dict:
    # What Keras writes for a TFSMLayer (it needs a SavedModel on disk to serialise one).
    return {
        "module": "keras.layers",
        "class_name": "TFSMLayer",
        "config": {"name": "decoder", "filepath": "/nonexistent/saved_model"},
        "registered_name": None,
    }


def _lookup(kind: str):
    def make() -> dict:
        layer = {
            "StringLookup": lambda: keras.layers.StringLookup(vocabulary=["a", "b"]),
            "IntegerLookup": lambda: keras.layers.IntegerLookup(vocabulary=[1, 2]),
            "TextVectorization": lambda: keras.layers.TextVectorization(vocabulary=["a", "b"]),
        }[kind]()
        serialized = keras.saving.serialize_keras_object(layer)
        serialized["config"]["vocabulary"] = "/etc/passwd"  # a file it would read
        return serialized

    return make


def _lambda() -> dict:
    return keras.saving.serialize_keras_object(keras.layers.Lambda(lambda x: x * 2))


# Keras' own classes that read files or run code when deserialised.
_UNSAFE = {
    "TFSMLayer": _tfsm_layer,
    "StringLookup": _lookup("StringLookup"),
    "IntegerLookup": _lookup("IntegerLookup"),
    "TextVectorization": _lookup("TextVectorization"),
    "Lambda": _lambda,
}


@pytest.mark.parametrize("class_name", list(_UNSAFE))
def test_keras_classes_that_read_files_or_run_code_are_refused(bundles, tmp_path, class_name):
    source, _ = bundles["a"]
    copy = tmp_path / "unsafe"
    shutil.copytree(source, copy)
    layer = _UNSAFE[class_name]()
    # Keras' own module: a "keras." prefix check would let every one of these through.
    assert layer["class_name"] == class_name and layer["module"].startswith("keras")

    def swap_decoder(config):
        # Captioner.from_config deserialises whatever stands in the decoder's place.
        config["config"]["decoder"] = layer

    _edit_model_config(copy, swap_decoder)
    with pytest.raises(BundleError, match=rf"holds {class_name} \(module keras\.layers\)"):
        check_model_archive(copy / MODEL_FILE)
    _resign(copy)  # a valid hash does not make it acceptable
    with pytest.raises(BundleError, match=rf"holds {class_name} .*refusing to load it$"):
        load_bundle(str(copy))


def test_a_class_hidden_anywhere_in_the_config_is_refused(bundles, tmp_path):
    source, _ = bundles["a"]
    copy = tmp_path / "hidden"
    shutil.copytree(source, copy)

    def hide(config):
        config["config"]["encoder"]["config"]["mean"] = [_tfsm_layer()]
        config["compile_config"] = {"loss": {"class_name": ["not", "a", "name"]}}

    _edit_model_config(copy, hide)
    with pytest.raises(BundleError) as refused:
        check_model_archive(copy / MODEL_FILE)
    assert "TFSMLayer (module keras.layers)" in str(refused.value)
    assert "['not', 'a', 'name']" in str(refused.value) and "\n" not in str(refused.value)


def test_the_trained_tiny_bundle_holds_only_allowed_classes(tiny_bundle):
    # Trained and compiled: its config.json has the optimizer, schedule and loss too.
    check_model_archive(Path(tiny_bundle) / MODEL_FILE)
    with zipfile.ZipFile(Path(tiny_bundle) / MODEL_FILE) as archive:
        config = json.loads(archive.read("config.json"))
    found = set(_classes_in(config))
    assert found <= ALLOWED_CLASSES and ("keras.optimizers", "Adam", None) in found


@pytest.mark.parametrize("preset", [demo, production], ids=["demo", "production"])
def test_full_size_inception_bundles_hold_only_allowed_classes(preset, tmp_path):
    """The demo and production presets (full InceptionV3 up to mixed7 / mixed10), built
    with random weights and compiled as training compiles them. Their serialised config
    is what ``model.keras`` stores as config.json, less the 90 MB of weights to write."""
    train_config = preset()
    config = train_config.captioner
    config = dataclasses.replace(
        config, encoder=dataclasses.replace(config.encoder, backbone_weights=None)
    )
    vocabulary = Vocabulary.build(["a red circle above a blue square"], 20, 10)
    model = build_captioner(config, vocabulary, load_backbone_weights=False)
    compile_captioner(model, train_config, steps_per_epoch=10)
    serialized = keras.saving.serialize_keras_object(model)
    assert serialized["registered_name"] == "captioning>Captioner"
    assert "compile_config" in serialized  # the optimizer classes are checked too
    assert set(_classes_in(serialized)) <= ALLOWED_CLASSES


# --- The staging cache --------------------------------------------------------------


def test_a_remote_bundle_is_staged_privately_under_its_model_id(gcs, bundles, tmp_path):
    (source_a, id_a), (source_b, id_b) = bundles["a"], bundles["b"]
    uri = _upload(source_a, "cache/current")
    cache = tmp_path / "cache"

    staged = stage_bundle(uri, cache_dir=cache)
    assert staged == str(cache / id_a) and verify_bundle(staged) == id_a
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert sorted(p.name for p in cache.iterdir()) == [id_a]  # no staging leftovers
    inode = (cache / id_a / MODEL_FILE).stat().st_ino
    assert stage_bundle(uri, cache_dir=cache) == staged  # reused, not downloaded again
    assert (cache / id_a / MODEL_FILE).stat().st_ino == inode

    # The same URI now holds another bundle: its manifest names a new id, so it is staged.
    _upload(source_b, "cache/current")
    staged = stage_bundle(uri, cache_dir=cache)
    assert staged == str(cache / id_b) and verify_bundle(staged) == id_b != id_a
    assert load_bundle(staged).model_id == id_b

    # A cached copy edited on disk is not trusted: it is staged again.
    (cache / id_b / VOCABULARY_FILE).write_text("{}")
    assert stage_bundle(uri, expected_model_id=id_b, cache_dir=cache) == str(cache / id_b)
    assert verify_bundle(str(cache / id_b)) == id_b


def test_the_default_cache_is_per_user_and_private(gcs, bundles, tmp_path, monkeypatch):
    source, model_id = bundles["a"]
    uri = _upload(source, "cache/default")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = tmp_path / f"captioning-bundles-{os.getuid()}"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)  # looser than it should be: tightened before use
    assert stage_bundle(uri) == str(root / model_id)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_a_cache_that_is_a_link_is_refused(gcs, bundles, tmp_path):
    source, _ = bundles["a"]
    uri = _upload(source, "cache/link")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "cache").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BundleError, match="is not a directory"):
        stage_bundle(uri, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.skipif(os.getuid() != 0, reason="making a folder another user owns needs root")
def test_a_cache_owned_by_another_user_is_refused(gcs, bundles, tmp_path):
    source, _ = bundles["a"]
    uri = _upload(source, "cache/owner")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)
    with pytest.raises(BundleError, match="belongs to uid 65534"):
        stage_bundle(uri, cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_a_declared_model_id_that_is_not_an_id_is_refused(gcs, bundles, tmp_path):
    source, _ = bundles["a"]
    copy = tmp_path / "odd"
    shutil.copytree(source, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["model_id"] = "../../escaped"
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    uri = _upload(copy, "cache/odd")
    with pytest.raises(BundleError, match=r"invalid model id '\.\./\.\./escaped'"):
        stage_bundle(uri, cache_dir=tmp_path / "cache" / "inner")
    assert not (tmp_path / "escaped").exists()


def test_a_remote_folder_without_a_bundle_is_a_clear_error(gcs, tmp_path):
    gcs.blob("cache/empty/readme.txt").upload_from_string(b"no bundle here")
    with pytest.raises(BundleError, match=r"has no readable manifest\.json"):
        stage_bundle(f"gs://{BUCKET}/cache/empty", cache_dir=tmp_path / "cache")
