#!/usr/bin/env bash
# Side by side in one run, each step a fresh process as a scheduler runs it (start-up included): the bare
# sentence-transformers encode (the torch compute limit, model load excluded) of LangChain's splitter's chunks and
# of exactly the texts ragindex embeds (bare_encode.py; the full build's ratio is taken against it), LangChain's indexing API
# (persisted SQL record manager + FAISS), and ragindex build (full, update, no-op) with each embedding backend.
# Uses the shared peer scripts (../shared/bench: make_corpus.py, raw_encode.py, peer_langchain_job.py).
# Usage: benchmarks/side_by_side.sh N_DOCS CHANGE_PCT PEER_PYTHON [BACKENDS...]   (from the checkout, .venv set up)
set -u
n=$1; pct=$2; peer=$3; shift 3
backends=("${@:-onnx-int8 onnx torch}")
read -r -a backends <<< "${backends[*]}"
here=$(cd "$(dirname "$0")" && pwd); shared=$(cd "$here/../../shared/bench" && pwd)
source "$here/../.venv/bin/activate"; export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
d=$(mktemp -d /tmp/sbs.XXXX); trap 'rm -rf "$d"' EXIT
python "$shared/make_corpus.py" /usr/share/doc/python3.11/html/_sources/library "$n" "$d" "$pct"
t() { local s; s=$(date +%s.%N); "$@" > "$d/last.out" 2> "$d/last.err"; echo "$(date +%s.%N) - $s" | bc; }
field() { python -c "import json,sys; j=json.load(open('$d/last.out')); print(${1})"; }
# the ONNX models are exported once per model (not per run): make sure that is done before timing
for b in "${backends[@]}"; do ragindex build "$d/base" --out "$d/warm-$b" --embedding-backend "$b" --max-documents 1 \
  > /dev/null 2>&1 || true; done
python -c "from ragindex.embedding import encode_texts as e; [e('sentence-transformers/all-MiniLM-L6-v2', ['x'], backend=b) for b in '${backends[*]}'.split()]"
bare=$(python "$shared/raw_encode.py" "$d/base" 2>/dev/null | tail -1)
# the same encode of exactly the texts ragindex embeds (its section-aware chunks, each with its section path)
own=$(python "$here/bare_encode.py" "$d/base" 2>/dev/null | tail -1)
lc_full=$(t "$peer" "$shared/peer_langchain_job.py" "$d/base" "$d/lc"); lc_full_r=$(tail -1 "$d/last.out")
lc_inc=$(t "$peer" "$shared/peer_langchain_job.py" "$d/updated" "$d/lc"); lc_inc_r=$(tail -1 "$d/last.out")
echo "bare torch encode (in process, load excluded) of LangChain's splitter's chunks: $bare"
echo "bare torch encode (in process, load excluded) of the texts ragindex embeds: $own"
echo "langchain full ${lc_full}s ($lc_full_r)"
echo "langchain update ${lc_inc}s ($lc_inc_r)"
for b in "${backends[@]}"; do
  full=$(t ragindex build "$d/base" --out "$d/$b-a" --embedding-backend "$b" --json); chunks=$(field "j['chunks']")
  inc=$(t ragindex build "$d/updated" --out "$d/$b-b" --previous "$d/$b-a" --embedding-backend "$b" --json)
  inc_e=$(field "j['embedded'],'embedded',j['reused'],'reused'")
  noop=$(t ragindex build "$d/updated" --out "$d/$b-c" --previous "$d/$b-b" --embedding-backend "$b" --json)
  echo "ragindex[$b] full ${full}s ($chunks chunks); update ${inc}s ($inc_e); no-op ${noop}s"
  python - "$bare" "$lc_full" "$lc_inc" "$full" "$inc" "$noop" "$b" "$own" <<'PY'
import re, sys
bare, own = (float(re.search(r"seconds=([\d.]+)", a).group(1)) for a in (sys.argv[1], sys.argv[8]))
lf, li, rf, ri, rn = map(float, sys.argv[2:7])
print(f"  [{sys.argv[7]}] update: {li / ri:.1f}x faster than langchain's update; full build (whole process) / bare "
      f"torch encode of the same texts = {rf / own:.2f} (of LangChain's chunks: {rf / bare:.2f}); no-op {rn:.2f} s")
PY
done
