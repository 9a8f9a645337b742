"""Small study specs shared by the search_spaces tests (MNIST-1D MLP, a few epochs)."""

RANDOM = """
name: r
model: {name: mlp}
train: {epochs: 12, lr: {loguniform: [1.0e-4, 1.0e-2]}}
pruning:
  method: schedule
  granularity: weight
  score: magnitude
  target: [smallest, largest]
  period: {int: [1, 3]}
  layers: [{name: fc1, final_fraction: 0.5, start_epoch: 2, end_epoch: 8}]
seeds: 2
search: {algorithm: random, num_samples: 5, seed: 7}
"""


OPTUNA = """
name: o
model: {name: mlp}
train: {epochs: 12}
pruning:
  method: imp
  granularity: weight
  imp: {rounds: {int: [1, 3]}, fraction: {uniform: [0.1, 0.3]}, rewind: [lr, weight]}
seeds: 3
search: {algorithm: optuna, num_samples: 8, metric: test_acc, mode: max, seed: 5}
"""
