#!/bin/bash
# Issue 30: `python train_agent.py --algo reinforce` (the default command, -v6) from two source trees side by side, one
# core and one torch thread each, so that both see the same load; then whether the two policies are the same floats.
#
#   git archive 695a2e4~1 | tar x -C ../ab-before     # the tree before session 21's speed-ups
#   git archive HEAD | tar x -C ../ab-after
#   experiments/env_speed/ab_train.sh ../ab-before ../ab-after /tmp/ab-train
#
# EVAL_IMAGES (default 8, as in session 22; 200 is the default command's protocol) sets --eval-images.
set -euo pipefail
BEFORE=$(realpath "$1"); AFTER=$(realpath "$2"); OUT=$(realpath -m "$3"); PY=${PYTHON:-python}
EVAL=${EVAL_IMAGES:-8}
rm -rf "$OUT"; mkdir -p "$OUT"
for tag in before after; do
  tree=$BEFORE; [ $tag = after ] && tree=$AFTER
  (cd "$tree" && OMP_NUM_THREADS=1 /usr/bin/time -f "$tag wall %e s user %U s sys %S s maxrss %M KB" -o "$OUT/$tag.time" \
     "$PY" train_agent.py --algo reinforce --threads 1 --eval-images "$EVAL" --no-progress --run-dir "$OUT/$tag" \
     > "$OUT/$tag.log" 2>&1) &
done
wait
cat "$OUT"/before.time "$OUT"/after.time
"$PY" - "$OUT" <<'PYEOF'
import json, sys
import numpy as np, torch
out = sys.argv[1]
ret = [np.array(json.load(open(f"{out}/{t}/results.json"))["eval"]["policy"]["returns"]) for t in ("before", "after")]
print(f"eval returns ({len(ret[0])} test images): largest difference {np.abs(ret[0] - ret[1]).max():.3g}")
def tensors(d, pre=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from tensors(v, pre + k + ".")
        elif torch.is_tensor(v):
            yield pre + k, v
pol = [dict(tensors(torch.load(f"{out}/{t}/policy.pt", weights_only=True))) for t in ("before", "after")]
print("policy tensors equal:", all(torch.equal(pol[0][k], pol[1][k]) for k in pol[0]) and pol[0].keys() == pol[1].keys())
PYEOF
