#!/usr/bin/env bash
# The offline demo, end to end: synthetic scenes -> train (demo preset) -> evaluate on
# fresh scenes -> caption a few. About 15 minutes on 2 CPU cores. Output in ./demo/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
OUT="${1:-$ROOT/demo}"
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*" >&2; }

step "1/4 synthetic training scenes (3000, seed 1)"
captioning synth --out "$OUT/train_scenes" --count 3000 --seed 1

step "2/4 train with --preset demo (backbone from scratch, 112 px)"
time captioning train --captions "$OUT/train_scenes/captions.csv" \
  --images "$OUT/train_scenes/images" --out "$OUT/bundle" --preset demo

step "3/4 evaluate on 300 fresh scenes (seed 2)"
captioning synth --out "$OUT/test_scenes" --count 300 --seed 2
captioning evaluate --model "$OUT/bundle" --captions "$OUT/test_scenes/captions.csv" \
  --images "$OUT/test_scenes/images" | tee "$OUT/metrics.txt"

step "4/4 a few captions next to their references"
ls "$OUT"/test_scenes/images/*.png | head -5 | xargs captioning predict --model "$OUT/bundle"
echo "references:" >&2
sed -n '2,6p' "$OUT/test_scenes/captions.csv"
