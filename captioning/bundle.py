"""The model bundle: one self-contained directory that is everything needed to caption.

Layout::

    BUNDLE/
      model.keras             Keras archive: architecture + every weight (backbone too)
      vocabulary.json         words and max caption length
      captioner_config.json   preprocessing, encoder, decoder and generation settings
      manifest.json           sha256 of every file above, and the model id

The model id is a sha256 over the file hashes, so two bundles with the same
content share an id, and a bundle whose files were edited gets a new one (even if
its manifest was re-hashed to match). Loading verifies every hash, refuses any class
not named in ``ALLOWED_CLASSES``, and deserialises with ``safe_mode=True``. Nothing is
fetched from the network at load time.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioning import storage
from captioning.config import CaptionerConfig, captioner_config_from_dict, to_json
from captioning.errors import BundleError
from captioning.text.vocabulary import Vocabulary

BUNDLE_FORMAT = "captioning-bundle/1"
MODEL_FILE = "model.keras"
VOCABULARY_FILE = "vocabulary.json"
CONFIG_FILE = "captioner_config.json"
MANIFEST_FILE = "manifest.json"
CONTENT_FILES = (MODEL_FILE, VOCABULARY_FILE, CONFIG_FILE)

# Every (module, class_name, registered_name) a bundle's config.json may name, and
# nothing else. Exact names, not "anything under keras.": Keras itself ships classes
# that read files or run code when deserialised (TFSMLayer loads a SavedModel,
# StringLookup / IntegerLookup / TextVectorization read vocabulary files, Lambda runs
# Python), and which of them safe_mode stops has changed between Keras versions.
# This is the whole set that real bundles hold (tiny, demo and production presets,
# trained or not, in every precision): the encoder and decoder build their sub-layers
# (InceptionV3 included) in code, so none of those is serialised. The last three are
# the compile config of a trained model; load_bundle never deserialises it
# (compile=False), but they are still named exactly. A new class in a bundle means
# adding it here, on purpose.
ALLOWED_CLASSES: frozenset[tuple[str | None, str | None, str | None]] = frozenset(
    {
        ("captioning.models.captioner", "Captioner", "captioning>Captioner"),
        ("captioning.models.image_encoder", "ImageEncoder", "captioning>ImageEncoder"),
        (
            "captioning.models.attention_gru_decoder",
            "AttentionGRUDecoder",
            "captioning>AttentionGRUDecoder",
        ),
        ("keras.optimizers", "Adam", None),
        ("keras.optimizers.schedules", "CosineDecay", None),
        ("keras.losses", "SparseCategoricalCrossentropy", None),
    }
)


@dataclass
class LoadedBundle:
    """A verified bundle, loaded and ready to caption."""

    captioner: Any  # captioning.models.captioner.Captioner
    vocabulary: Vocabulary
    config: CaptionerConfig
    model_id: str
    path: str
    precision: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_id(file_hashes: dict[str, str]) -> str:
    joined = "".join(f"{name}:{file_hashes[name]}\n" for name in sorted(file_hashes))
    return "sha256-" + hashlib.sha256(joined.encode()).hexdigest()[:32]


def save_bundle(captioner, vocabulary: Vocabulary, config: CaptionerConfig, out_dir: str) -> str:
    """Write a bundle to ``out_dir`` (local or gs://) and return its model id."""
    if storage.is_remote(out_dir):
        with tempfile.TemporaryDirectory() as local:
            model_id = save_bundle(captioner, vocabulary, config, local)
            storage.upload_tree(Path(local), str(out_dir))
            return model_id
    out = Path(storage.local_path(out_dir))
    out.mkdir(parents=True, exist_ok=True)
    captioner.save(out / MODEL_FILE)
    (out / VOCABULARY_FILE).write_text(vocabulary.to_json())
    (out / CONFIG_FILE).write_text(to_json(config))
    hashes = {name: _sha256(out / name) for name in CONTENT_FILES}
    model_id = _model_id(hashes)
    manifest = {"format": BUNDLE_FORMAT, "model_id": model_id, "files": hashes}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return model_id


def verify_bundle(path: str) -> str:
    """Check every file against the manifest; return the model id or raise BundleError."""
    root = Path(storage.local_path(path))
    if not root.is_dir():
        raise BundleError(f"model bundle {path} does not exist or is not a directory")
    try:
        manifest = json.loads((root / MANIFEST_FILE).read_text())
        recorded = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise BundleError(f"model bundle {path} has no readable {MANIFEST_FILE}") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"model bundle {path} has unknown format {manifest.get('format')!r}")
    if set(recorded) != set(CONTENT_FILES):
        raise BundleError(f"model bundle {path} manifest lists {sorted(recorded)}")
    for name in CONTENT_FILES:
        file = root / name
        if not file.is_file():
            raise BundleError(f"model bundle {path} is missing {name}")
        if _sha256(file) != recorded[name]:
            raise BundleError(
                f"model bundle {path} failed its integrity check: {name} was modified"
            )
    model_id = _model_id(recorded)
    if manifest.get("model_id") != model_id:
        raise BundleError(f"model bundle {path} failed its integrity check: model id mismatch")
    return model_id


def _classes_in(config: Any) -> list[tuple[str | None, str | None, str | None]]:
    """Every (module, class_name, registered_name) in a serialised Keras config."""
    found = []
    if isinstance(config, dict):
        if "class_name" in config:
            found.append(
                (config.get("module"), config.get("class_name"), config.get("registered_name"))
            )
        for value in config.values():
            found.extend(_classes_in(value))
    elif isinstance(config, list):
        for value in config:
            found.extend(_classes_in(value))
    return found


def _is_allowed(names: tuple[Any, Any, Any]) -> bool:
    try:
        return names in ALLOWED_CLASSES
    except TypeError:  # a forged config can put a list where a name belongs
        return False


def _describe(class_name: Any, module: Any) -> str:
    """``Class (module m)`` on one short line, whatever a forged config put there."""
    text = f"{class_name} (module {module})"
    return " ".join(text.split())[:120]


def check_model_archive(model_file: Path) -> None:
    """Refuse a .keras archive whose config names any class outside ``ALLOWED_CLASSES``."""
    try:
        with zipfile.ZipFile(model_file) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        raise BundleError(f"{model_file} is not a readable Keras archive") from None
    if not isinstance(config, dict) or config.get("registered_name") != "captioning>Captioner":
        raise BundleError(f"{model_file} does not hold a captioning Captioner")
    refused: list[str] = []
    for module, class_name, registered in _classes_in(config):
        if _is_allowed((module, class_name, registered)):
            continue
        name = _describe(class_name, module)
        if name not in refused:
            refused.append(name)
    if refused:
        raise BundleError(
            f"{model_file} holds {', '.join(refused)}, which a captioning bundle never "
            "contains; refusing to load it"
        )


def load_bundle(path: str, precision: str | None = None) -> LoadedBundle:
    """Verify and load a bundle (local or gs://) under a precision policy
    (default: the bundle's own, ``generation.precision``)."""
    if storage.is_remote(path):
        local = tempfile.mkdtemp(prefix="captioning-bundle-")
        storage.download_tree(str(path), Path(local))
        loaded = load_bundle(local, precision)
        loaded.path = str(path)
        return loaded
    import keras

    # Importing the Captioner registers every serializable class of ours with Keras.
    from captioning.models.captioner import Captioner
    from captioning.precision import dtype_policy, resolve_precision

    model_id = verify_bundle(path)
    root = Path(storage.local_path(path))
    check_model_archive(root / MODEL_FILE)
    try:
        vocabulary = Vocabulary.from_json((root / VOCABULARY_FILE).read_text())
        config = captioner_config_from_dict(json.loads((root / CONFIG_FILE).read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise BundleError(f"model bundle {path} has an invalid config: {error}") from None
    policy = resolve_precision(precision or config.generation.precision)
    try:
        with dtype_policy(policy):
            model = keras.saving.load_model(root / MODEL_FILE, safe_mode=True, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure means "cannot use this bundle"
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise BundleError(f"model bundle {path} could not be loaded: {first_line}") from None
    if not isinstance(model, Captioner):
        raise BundleError(f"model bundle {path} does not hold a Captioner")
    return LoadedBundle(model, vocabulary, config, model_id, str(path), policy)
