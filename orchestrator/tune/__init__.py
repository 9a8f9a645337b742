"""The Ray Tune adapter: building and restoring Tuners, the Tune callbacks a study uses, and the guards around Tune's run state (damaged checkpoints, a full disk, the last good state)."""
