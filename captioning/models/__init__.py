"""Keras model code: encoder, attention decoder, captioner, and caption search."""
