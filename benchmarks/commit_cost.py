"""What the atomic commit costs: the commit step's share of a caption run's wall time.

    .venv/bin/python benchmarks/commit_cost.py --workdir /tmp/commit_bench [--bundle B]

Captions N synthetic scenes three times into one output folder with the real CLI:
a first run (creates the tables), a full rerun (replaces every file), and an incremental
run that only appends the errors of one new broken file. Each run's summary carries the
commit step's own time (``commit_seconds``: describe files, commit both tables, tidy,
vacuum); the JSON printed gives it beside the run's wall time. The target: under 5% of
a 1,000-image run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny_bundle(workdir: Path) -> Path:
    from captioning.data.synthetic_scenes import generate_scenes
    from captioning.presets import tiny
    from captioning.training.trainer import train

    bundle = workdir / "bundle"
    if (bundle / "manifest.json").exists():
        return bundle
    scenes = workdir / "train_scenes"
    generate_scenes(scenes, count=40, seed=7)
    config = dataclasses.replace(tiny(), epochs=1)
    train(str(scenes / "captions.csv"), str(scenes / "images"), str(bundle), config)
    return bundle


def caption(args: list[str]) -> dict:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "captioning.cli.main", "caption", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if done.returncode not in (0, 3):
        sys.exit(f"caption failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    summary["process_seconds"] = round(time.monotonic() - started, 2)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, help="default: a tiny bundle trained here")
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    from captioning.data.synthetic_scenes import generate_scenes

    bundle = args.bundle or tiny_bundle(args.workdir)
    archive = args.workdir / f"archive_{args.images}"
    if not (archive / "captions.csv").exists():
        generate_scenes(archive, count=args.images, seed=3)
    output = args.workdir / "out"
    common = ["--output", str(output), "--model", str(bundle)]
    runs = {}
    runs["first"] = caption(["--input", f"{archive}/images/*.png", *common])
    runs["full_rerun"] = caption(["--input", f"{archive}/images/*.png", *common])
    broken = archive / "images" / "zz_broken.png"
    broken.write_bytes(b"not an image")
    try:
        runs["incremental"] = caption(
            ["--input", f"{archive}/images/*.png", *common, "--skip-existing"]
        )
    finally:
        broken.unlink()
    result = {
        "images": args.images,
        "bundle": str(bundle),
        "runs": {
            name: {
                "captioned": s["captioned"],
                "errors": s["errors"],
                "skipped_existing": s["skipped_existing"],
                "wall_seconds": s["wall_seconds"],
                "commit_seconds": s["commit_seconds"],
                "commit_share": round(s["commit_seconds"] / s["wall_seconds"], 4),
                "table_versions": s["table_versions"],
            }
            for name, s in runs.items()
        },
    }
    result["max_commit_share"] = max(r["commit_share"] for r in result["runs"].values())
    result["target_met"] = result["max_commit_share"] < 0.05
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
