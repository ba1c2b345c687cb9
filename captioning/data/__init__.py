"""Captioned-dataset readers and the synthetic scene generator."""
