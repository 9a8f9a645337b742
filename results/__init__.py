"""Export to Parquet, the instability-gain aggregator, and the Plotly report."""
