"""Pruned training: datasets, models, pruning, the Ray-free loop, and the Tune trainable shim.

Importing this package (or any module but `trainables.tune_trainable`) never imports Ray.
"""
