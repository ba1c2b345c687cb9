"""captioning: batch image captioning with TensorFlow/Keras (the library; no Beam here)."""
