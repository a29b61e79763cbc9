# Draws docs/benchmarks.png from docs/bench-chart.dat (written by report.py).
# Usage: gnuplot -e "data='docs/bench-chart.dat'; out='docs/benchmarks.png'" benchmarks/tools/chart.gp
set terminal pngcairo size 1400,620 font "DejaVu Sans,11"
set output out
set title "keysem vs the baselines: time per operation relative to the mutex baseline (median; lower is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 2
set yrange [0.125:8]
set ytics ("1/8" 0.125, "1/4" 0.25, "1/2" 0.5, "1" 1, "2" 2, "4" 4, "8" 8)
set grid ytics
set ylabel "time / mutex baseline's time"
set xtics rotate by -30 nomirror
set key top left
set arrow from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 linecolor rgb "#444444"
plot data using 2:xtic(1) title "keysem" linecolor rgb "#1f77b4", \
     ''   using 3 title "mutex baseline" linecolor rgb "#aaaaaa", \
     ''   using 4 title "channel baseline" linecolor rgb "#ff7f0e"
