"""WriteFeatures: (uri, features) -> sharded TFRecords of tf.train.Example, plus a name index.

The files land in ``DIR/shards/`` under the run's id (``captioning.run_layout``), beside
the committed run's; nothing reads them until the launcher commits the run's spec.
Records are keyed by the image's name relative to the images directory (the
name in the captions file), which is how the trainer looks them up. The index
(text, one name per line) lets the trainer check that every image it trains
on has features without reading the shards themselves.
"""

from __future__ import annotations

import apache_beam as beam

from captioning import run_layout, storage
from captioning.training.feature_spec import feature_record, image_name


def image_uri(images: str, name: str) -> str:
    """Where the image ``name`` of the captions file lives (inverse: ``image_name``)."""
    return storage.join(images, name)


class WriteFeatures(beam.PTransform):
    """(uri, features) -> the run's shard and index files; outputs their paths."""

    def __init__(self, output: str, run_id: str, images: str) -> None:
        super().__init__()
        self.output = output
        self.run_id = run_id
        self.images = images

    def expand(self, features):
        images = self.images
        named = features | "Name" >> beam.MapTuple(
            lambda uri, values: (image_name(images, uri), values)
        )
        written = (
            named
            | "Serialize" >> beam.MapTuple(feature_record)
            | "WriteToTFRecord"
            >> beam.io.WriteToTFRecord(
                run_layout.shards_prefix(self.output, self.run_id), file_name_suffix=".tfrecord"
            )
        )
        indexed = (
            named
            | "Names" >> beam.MapTuple(lambda name, _: name)
            | "WriteIndex"
            >> beam.io.WriteToText(
                run_layout.index_prefix(self.output, self.run_id), file_name_suffix=".txt"
            )
        )
        return (written, indexed) | "WrittenFiles" >> beam.Flatten()
