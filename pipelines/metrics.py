"""Beam metric names shared by the stages and the run summary."""

NAMESPACE = "captioning"
INPUTS = "inputs"
SKIPPED_EXISTING = "skipped_existing"
IMAGES_READ = "images_read"
IMAGES_DECODED = "images_decoded"
IMAGES_CAPTIONED = "images_captioned"
ERRORS_PREFIX = "errors."
