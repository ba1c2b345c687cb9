"""Two replicas under MirroredStrategy take the same steps as one replica.

The CPU is split into 2 logical devices in a subprocess (device setup must happen
before TensorFlow starts). Both runs see the same global batches in the same order.
Captions have equal length here, so every replica holds the same number of real
tokens and the per-replica mean losses average to exactly the global mean; the
tolerance only absorbs float32 summation order. The backbone is frozen here because
batch normalisation in a trainable backbone normalises over each replica's half of the
batch, which is a real (and expected) difference between 1 and N replicas.
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

    config = tiny()
    encoder = dataclasses.replace(config.captioner.encoder, trainable=False)
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
            compile_captioner(model, config)
        data = tf.data.Dataset.from_tensor_slices((images, tokens)).batch(16)
        data = data.map(to_model_inputs("images"))
        history = model.fit(data, epochs=3, verbose=0, shuffle=False)
        losses[replicas] = [float(x) for x in history.history["loss"]]
        losses[f"replicas_{replicas}"] = strategy.num_replicas_in_sync
    print(json.dumps(losses))
    """
)


def test_two_replicas_match_one_on_the_same_global_batch():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    assert losses["replicas_1"] == 1 and losses["replicas_2"] == 2
    one, two = losses["1"], losses["2"]
    assert len(one) == len(two) == 3
    # Identical first step, and still within 1e-3 relative after 12 optimizer steps.
    for a, b in zip(one, two, strict=True):
        assert abs(a - b) <= 1e-3 * abs(a), (one, two)
    assert one[-1] < one[0]  # it is really training
