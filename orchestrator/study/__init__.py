"""A study directory: its layout on disk, its one-driver lock, where it stands, its live report."""
