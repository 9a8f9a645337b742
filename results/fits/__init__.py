"""The matched-baseline gain and the correlation fits of ``fits.parquet`` (pure numpy / scipy)."""
