"""Static HTML reports of caption runs: sampled gallery, run summary, error table."""
