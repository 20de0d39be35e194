#!/usr/bin/env bash
# Turns the TSV of scaling.sbatch into a PNG: samples/s against ranks with the
# ideal (linear) line, and the parallel efficiency on the right axis.
#
#   jobs/plot_scaling.sh scaling-123.tsv [scaling-123.png]
#
# Needs gnuplot (Debian: gnuplot-nox, installed when missing).
set -euo pipefail

tsv=${1:?usage: plot_scaling.sh SCALING.tsv [OUT.png]}
png=${2:-${tsv%.tsv}.png}
[[ -f $tsv ]] || { echo "no such file: $tsv" >&2; exit 2; }

if ! command -v gnuplot >/dev/null; then
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends gnuplot-nox
fi

# The ideal line goes through the smallest run: samples/s per rank there,
# times the ranks. Columns: ranks, threads_per_rank, batch, samples_per_s, ...
per_rank=$(awk -F'\t' 'NR == 2 { print $4 / $1 }' "$tsv")
max_ranks=$(awk -F'\t' 'NR > 1 && $1 > m { m = $1 } END { print m }' "$tsv")
[[ -n $per_rank && -n $max_ranks ]] || { echo "$tsv has no data rows" >&2; exit 2; }

gnuplot <<GNUPLOT
set terminal pngcairo size 800,500 font ",11"
set output "$png"
set datafile separator "\t"
set title "ringflow strong scaling (global batch fixed)"
set xlabel "ranks"
set ylabel "samples/s"
set y2label "parallel efficiency"
# Rank counts double: a log2 axis spaces them evenly.
set logscale x 2
set xrange [0.8:$max_ranks * 1.25]
set xtics 2
set yrange [0:*]
set y2range [0:1.2]
set ytics nomirror
set y2tics 0.2
set grid
set key top left
plot "$tsv" skip 1 using 1:4 with linespoints lw 2 pt 7 title "measured", \
     "$tsv" skip 1 using 1:(\$1 * $per_rank) with lines dt 2 title "ideal", \
     "$tsv" skip 1 using 1:6 axes x1y2 with linespoints pt 5 title "efficiency"
GNUPLOT
echo "wrote $png"
