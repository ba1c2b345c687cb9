"""Apache Beam pipelines: the caption job and its stages. Imports captioning, never the reverse."""
