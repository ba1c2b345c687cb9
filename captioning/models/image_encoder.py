"""InceptionV3 image encoder: normalise, backbone feature grid, Dense projection.

``ImageEncoder.from_captioner_config`` is the one place a ``CaptionerConfig`` becomes an
encoder: the captioner and the feature writers (``captioning features``) both build
theirs there, so stored features always come from the backbone the trainer would build.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras
from keras import ops

from captioning.config import CaptionerConfig
from captioning.models.image_normalization import ImageNormalization

# The dtype of stored backbone features: the trainer's feature cache and the shards of
# ``captioning features`` both cast ``backbone_features`` to it, so training reads the
# same numbers from either. float16 stores the grid in half the bytes of float32.
FEATURE_DTYPE = "float16"


def build_inception_backbone(
    image_size: int, feature_layer: str, weights: str | None
) -> keras.Model:
    """InceptionV3 without its classifier, cut at ``feature_layer``.

    ``weights`` is "imagenet" (Keras downloads them once and caches them in
    ~/.keras), None for a random init, or the path of a local weights file.
    """
    base = keras.applications.InceptionV3(
        include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
        input_shape=(image_size, image_size, 3),
    )
    _name_layers_deterministically(base)
    if weights not in (None, "imagenet"):
        # After renaming: a Keras 3 weights file matches layers by name. (Keras' own
        # ImageNet file is a legacy H5 that it matches by layer order.)
        base.load_weights(weights)
    if feature_layer == base.layers[-1].name:
        return base
    try:
        output = base.get_layer(feature_layer).output
    except ValueError:
        raise ValueError(f"InceptionV3 has no layer named {feature_layer!r}") from None
    return keras.Model(base.input, output, name=f"inception_v3_{feature_layer}")


# Keras names these layers from a process-wide counter ("conv2d_861"), and a .keras
# archive stores weights under layer names, so a bundle saved in one process would not
# load in another that had built other models first.
_AUTO_NAMED = re.compile(
    r"^(input_layer|conv2d|batch_normalization|activation|max_pooling2d|average_pooling2d|concatenate)"
    r"(_\d+)?$"
)


def _name_layers_deterministically(model: keras.Model) -> None:
    """Rename auto-named layers as a fresh process would: conv2d, conv2d_1, ..."""
    seen: dict[str, int] = {}
    for layer in model.layers:
        match = _AUTO_NAMED.match(layer.name)
        if match:
            kind = match.group(1)
            count = seen.get(kind, 0)
            seen[kind] = count + 1
            layer.name = kind if count == 0 else f"{kind}_{count}"


@keras.saving.register_keras_serializable(package="captioning")
class ImageEncoder(keras.layers.Layer):
    """uint8 images [B, S, S, 3] -> projected features [B, L, projection_dim].

    ``L`` is the number of cells in the backbone's spatial grid (8x8 = 64 at 299 px
    for mixed10). ``backbone_features`` exposes the grid before the projection,
    which is what the training feature cache stores when the backbone is frozen.
    """

    def __init__(
        self,
        image_size: int = 299,
        feature_layer: str = "mixed10",
        projection_dim: int = 256,
        backbone_weights: str | None = "imagenet",
        trainable_backbone: bool = False,
        normalization: str = "inception",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        load_backbone_weights: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        # === Layers ===
        self.normalize = ImageNormalization(normalization, mean, std, name="normalize")
        # Weights come from ``backbone_weights`` only when a model is first built for
        # training; a reloaded bundle gets every weight from its own files instead.
        self.backbone = build_inception_backbone(
            image_size, feature_layer, backbone_weights if load_backbone_weights else None
        )
        self.backbone.trainable = trainable_backbone
        self.projection = keras.layers.Dense(projection_dim, activation="relu", name="projection")

        # === Config ===
        self.image_size = image_size
        self.feature_layer = feature_layer
        self.projection_dim = projection_dim
        self.backbone_weights = backbone_weights
        self.trainable_backbone = trainable_backbone
        self.normalization = normalization
        self.mean = mean
        self.std = std

    @classmethod
    def from_captioner_config(
        cls,
        config: CaptionerConfig,
        *,
        load_backbone_weights: bool,
        trainable_backbone: bool | None = None,
    ) -> ImageEncoder:
        """The encoder of ``config``, named "encoder" as a Captioner's bundle stores it.

        ``trainable_backbone`` overrides ``config.encoder.trainable`` (None keeps it): the
        feature writers freeze it, as training from their features requires. Build it
        under the dtype policy the model will run in.
        """
        image, encoder = config.image, config.encoder
        return cls(
            image_size=image.image_size,
            feature_layer=encoder.feature_layer,
            projection_dim=encoder.projection_dim,
            backbone_weights=encoder.backbone_weights,
            trainable_backbone=(
                encoder.trainable if trainable_backbone is None else trainable_backbone
            ),
            normalization=image.normalization,
            mean=image.mean,
            std=image.std,
            load_backbone_weights=load_backbone_weights,
            name="encoder",
        )

    @property
    def grid_size(self) -> int:
        _, height, width, _ = self.backbone.output.shape
        return height * width

    @property
    def backbone_channels(self) -> int:
        return self.backbone.output.shape[-1]

    def build(self, input_shape=None):
        self.projection.build((None, None, self.backbone_channels))
        self.built = True

    def backbone_features(self, images, training=False):
        """uint8 images -> the flattened backbone grid [B, L, C]."""
        grid = self.backbone(self.normalize(images), training=training and self.trainable_backbone)
        return ops.reshape(grid, (ops.shape(grid)[0], -1, self.backbone_channels))

    def project(self, features):
        return self.projection(features)

    def call(self, images, training=False):
        return self.project(self.backbone_features(images, training=training))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "feature_layer": self.feature_layer,
                "projection_dim": self.projection_dim,
                "backbone_weights": self.backbone_weights,
                "trainable_backbone": self.trainable_backbone,
                "normalization": self.normalization,
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std),
            }
        )
        return config
