"""Looking inside a caption: which part of the image each generated word attended to."""
