"""Named study specs shipped with the package (YAML)."""
