"""Study specs: typed, validated at load; sweeps, presets, expansion into trials."""
