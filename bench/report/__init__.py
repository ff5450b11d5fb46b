"""Reports: every human-readable rendering of results (tables now; figures and documents build on them)."""
