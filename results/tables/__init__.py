"""A study's tables: the Tune snapshot reader, the per-trial summary, the Parquet schema and export."""
