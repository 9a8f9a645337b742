"""The CLI, Tuner building (local or cluster), resume, status and Ray Jobs submission."""
