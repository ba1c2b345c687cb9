"""Beam metric names shared by the stages and the run summary."""

NAMESPACE = "captioning"
INPUTS = "inputs"
SKIPPED_EXISTING = "skipped_existing"
IMAGES_READ = "images_read"
IMAGES_DECODED = "images_decoded"
IMAGES_CAPTIONED = "images_captioned"
ERRORS_PREFIX = "errors."
COMMIT_MILLISECONDS = "commit_milliseconds"
# GPU decoding: JPEGs the probe sent to the inference step, and those the GPU decoded
# there by nvImageCodec (the rest of them Pillow decoded next to the model).
ROUTED_TO_GPU = "jpegs_routed_to_gpu"
DECODED_BY_NVIMGCODEC = "jpegs_decoded_by_nvimgcodec"
# Blank lines (and text manifests' comments) name no input: skipped, but counted.
MANIFEST_BLANK_LINES = "manifest_blank_lines"
