"""Two replicas under MirroredStrategy take the same steps as one replica.

The CPU is split into 2 logical devices in a subprocess (device setup must happen
before TensorFlow starts). Both runs see the same global batches in the same order.
Captions have equal length here, so every replica holds the same number of real
tokens and the per-replica mean losses average to exactly the global mean; the
tolerance only absorbs float32 summation order.

With a trainable backbone the trainer synchronises batch normalisation across replicas
(global-batch statistics); without that each replica normalises over its half of the
batch, and the runs part, which the test also shows.
"""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, sys
    import numpy as np
    from captioning.training.strategy import split_cpu
    split_cpu(2)
    import keras, tensorflow as tf
    from captioning.presets import tiny
    from captioning.text.vocabulary import Vocabulary
    from captioning.training.trainer import build_captioner, compile_captioner
    from captioning.training.input_pipeline import to_model_inputs
    from captioning.training.strategy import synchronize_batch_norm

    trainable, synchronized = json.loads(sys.argv[1])
    config = tiny()
    encoder = dataclasses.replace(config.captioner.encoder, trainable=trainable)
    config = dataclasses.replace(
        config, captioner=dataclasses.replace(config.captioner, encoder=encoder))
    words = ["red", "blue", "green", "circle", "square", "star"]
    rng = np.random.default_rng(0)
    captions = [" ".join(rng.choice(words, 4)) for _ in range(64)]
    vocabulary = Vocabulary.build(captions, 20, 6)
    tokens = vocabulary.encode_batch(captions)
    images = rng.integers(0, 255, (64, 75, 75, 3), dtype=np.uint8)
    losses = {}
    for replicas in (1, 2):
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = build_captioner(config.captioner, vocabulary)
            synchronize_batch_norm(model.encoder.backbone, synchronized)
            compile_captioner(model, config)
        data = tf.data.Dataset.from_tensor_slices((images, tokens)).batch(16)
        data = data.map(to_model_inputs("images"))
        history = model.fit(data, epochs=3, verbose=0, shuffle=False)
        losses[replicas] = [float(x) for x in history.history["loss"]]
        losses[f"replicas_{replicas}"] = strategy.num_replicas_in_sync
    print(json.dumps(losses))
    """
)


def _losses(trainable: bool, synchronized: bool) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps([trainable, synchronized])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    assert losses["replicas_1"] == 1 and losses["replicas_2"] == 2
    assert len(losses["1"]) == len(losses["2"]) == 3
    assert losses["1"][-1] < losses["1"][0]  # it is really training
    return losses


def _close(one: list[float], two: list[float]) -> bool:
    # Identical first step, and still within 1e-3 relative after 12 optimizer steps.
    return all(abs(a - b) <= 1e-3 * abs(a) for a, b in zip(one, two, strict=True))


def test_two_replicas_match_one_on_the_same_global_batch():
    losses = _losses(trainable=False, synchronized=False)
    assert _close(losses["1"], losses["2"]), losses


def test_a_trainable_backbone_matches_only_with_synchronised_batch_norm():
    synchronized = _losses(trainable=True, synchronized=True)
    assert _close(synchronized["1"], synchronized["2"]), synchronized
    local = _losses(trainable=True, synchronized=False)
    assert not _close(local["1"], local["2"]), local
