"""Where input images come from: HTTP(S) URLs and WebDataset tar shards."""
