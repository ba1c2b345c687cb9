"""Do TensorFlow and JAX caption the same? One bundle, the same images, both backends.

    python benchmarks/backend_agreement.py --bundle demo/bundle \\
        --images 'demo/test_scenes/images/*.png' [--precision float32 mixed_bfloat16]

Runs ``captioning predict --json`` once per backend and precision (separate processes,
since Keras picks its backend at import) and prints one JSON object: per precision,
how many captions are identical, the largest score difference, and the first few
disagreements.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

from captioning.precision import POLICIES


def predict(bundle: str, images: list[str], backend: str, precision: str) -> tuple[list, float]:
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "captioning.cli.main", "predict", "--json"]
    command += ["--precision", precision, "--model", bundle, *images]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{backend} predict failed:\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return rows, time.perf_counter() - start


def compare(tensorflow: list[dict], jax: list[dict]) -> dict:
    same = [a["caption"] == b["caption"] for a, b in zip(tensorflow, jax, strict=True)]
    differences = [abs(a["score"] - b["score"]) for a, b in zip(tensorflow, jax, strict=True)]
    disagreements = [
        {"image": a["image"], "tensorflow": a["caption"], "jax": b["caption"]}
        for a, b, equal in zip(tensorflow, jax, same, strict=True)
        if not equal
    ]
    return {
        "images": len(same),
        "identical_captions": sum(same),
        "max_score_difference": max(differences, default=0.0),
        "first_disagreements": disagreements[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="model bundle directory")
    parser.add_argument("--images", required=True, help="glob of image files")
    parser.add_argument("--limit", type=int, default=300, help="first N images (sorted)")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        choices=POLICIES,
    )
    args = parser.parse_args()
    images = sorted(glob.glob(args.images))[: args.limit]
    if not images:
        sys.exit(f"no images match {args.images}")
    result = {"bundle": args.bundle}
    for precision in args.precision:
        tensorflow, tf_seconds = predict(args.bundle, images, "tensorflow", precision)
        jax, jax_seconds = predict(args.bundle, images, "jax", precision)
        result[precision] = compare(tensorflow, jax) | {
            "seconds": {"tensorflow": round(tf_seconds, 1), "jax": round(jax_seconds, 1)}
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
