"""The report: every number it shows (pure), then its Plotly figures and HTML."""
