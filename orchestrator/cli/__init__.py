"""The `prunetune` command line: parsing, the run/resume driver, the dry run, read-only views."""
