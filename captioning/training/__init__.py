"""The training job: tf.data input, feature cache, distribution strategy, and the fit loop."""
