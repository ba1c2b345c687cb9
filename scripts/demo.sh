#!/usr/bin/env bash
# The offline demo, end to end: synthetic scenes -> train (demo preset) -> evaluate on
# fresh scenes, with an attention figure -> caption a fresh folder with the Beam pipeline
# -> its HTML report. About 15 minutes on 2 CPU cores. Output in ./demo/ (or the
# directory given as $1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
OUT="${1:-$ROOT/demo}"
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*" >&2; }

step "1/5 synthetic training scenes (3000, seed 1)"
captioning synth --out "$OUT/train_scenes" --count 3000 --seed 1

step "2/5 train with --preset demo (backbone from scratch, 112 px)"
time captioning train --captions "$OUT/train_scenes/captions.csv" \
  --images "$OUT/train_scenes/images" --out "$OUT/bundle" --preset demo
echo "training curves: $OUT/bundle.run/history.png (per epoch: $OUT/bundle.run/history.csv)" >&2

step "3/5 evaluate on 300 fresh scenes (seed 2)"
captioning synth --out "$OUT/test_scenes" --count 300 --seed 2
captioning evaluate --model "$OUT/bundle" --captions "$OUT/test_scenes/captions.csv" \
  --images "$OUT/test_scenes/images" --per-image "$OUT/per_image.csv" | tee "$OUT/metrics.txt"
echo "attention maps, one per word, of the first test scene: $OUT/attention.png" >&2
captioning explain "$OUT/test_scenes/images/scene_2_000000.png" --model "$OUT/bundle" \
  --out "$OUT/attention.png"

step "4/5 a few captions next to their references"
ls "$OUT"/test_scenes/images/*.png | head -5 | xargs captioning predict --model "$OUT/bundle"
echo "references:" >&2
sed -n '2,6p' "$OUT/test_scenes/captions.csv"

step "5/5 the caption pipeline (Beam, DirectRunner) over a fresh folder of 100 scenes"
captioning synth --out "$OUT/archive" --count 100 --seed 3
printf 'not an image' > "$OUT/archive/images/broken.png"
captioning caption --input "$OUT/archive/images/*.png" --output "$OUT/captions" \
  --model "$OUT/bundle"
python - "$OUT/captions" <<'PY'
import sys, duckdb
from deltalake import DeltaTable
out = sys.argv[1]
# The committed snapshot of each Delta table, queried with DuckDB.
captions = DeltaTable(f"{out}/captions").to_pyarrow_dataset()
errors = DeltaTable(f"{out}/errors").to_pyarrow_dataset()
print(duckdb.sql("SELECT regexp_extract(image_uri, '[^/]+$') AS image, caption, round(score, 3) AS score, width, height FROM captions ORDER BY image LIMIT 5"))
print(duckdb.sql("SELECT regexp_extract(image_uri, '[^/]+$') AS image, stage, error_type, message FROM errors"))
PY
echo "the run's HTML report (opens from disk in any browser):" >&2
captioning report --captions "$OUT/captions" --out "$OUT/report" \
  --evaluation "$OUT/per_image.csv" --evaluation-images "$OUT/test_scenes/images"
