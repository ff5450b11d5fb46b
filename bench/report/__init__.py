"""Reports: every human-readable rendering of results: tables, figures, LaTeX and the report document."""
