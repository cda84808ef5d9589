"""What a run folder reports: summary.md, report.html, the tables and plots behind them.

tables      cells and top-k lists, metric names, the context and selected-w tables
statistics  Table 1, paired comparison, Pareto frontiers (cluster bootstrap, sign-flip test)
plots       the PNG figures
sections    the one section model both documents are rendered from
render      markdown and HTML from that model through templates/*.j2
provenance  versions, git commit, the hardware line, manifest.json
"""
