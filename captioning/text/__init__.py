"""Caption text: normalisation and the vocabulary."""
