"""Image decoding and preprocessing shared by training and inference."""
