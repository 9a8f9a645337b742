"""The Ray runtime (a local Ray or a cluster connection) and Ray Jobs submission."""
