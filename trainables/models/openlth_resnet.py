"""OpenLTH's ``cifar_resnet_20`` (Jin et al. 2022 ran IMP on it), built from prunetune's ResNet.

OpenLTH (``models/cifar_resnet.py``) differs from Idelbayev's ResNet-20 (``resnet20``) in three
ways, all of which :class:`trainables.models.resnet.CifarResNet` already expresses:

- where the shape changes, the shortcut is a 1x1 stride-2 conv (no bias) + BatchNorm: exactly
  ``Block(option="B")``, whose ``shortcut_mask`` stays all ones (multiplying by 1.0 is exact)
  unless filter pruning zeroes an entry; weight pruning never touches it;
- initialisation (OpenLTH ``model_init='kaiming_normal'``, ``batchnorm_init='uniform'``): every
  Conv2d / Linear weight ``kaiming_normal_`` with torch's defaults (fan_in, gain sqrt(2)); every
  BatchNorm weight ~ U(0, 1) and bias 0; the fc bias keeps torch's default;
- weight pruning (OpenLTH ``sparse_global`` over ``prunable_layer_names``) ranks every Conv2d and
  Linear weight, the output layer ``fc`` included.

The stem is conv3x3-BN-ReLU, the stages are (W, 3), (2W, 3), (4W, 3) blocks, then global average
pooling (OpenLTH's ``avg_pool2d(out, out.size()[3])`` on square maps) and ``fc``. The modules are
created and initialised in OpenLTH's order, so on one device a seed gives OpenLTH's weights.
"""

from __future__ import annotations

from torch import nn

from trainables.models.base import check_input
from trainables.models.resnet import CifarResNet


class OpenLthResNet(CifarResNet):
    """A :class:`CifarResNet` with three option-B blocks per stage whose output layer is prunable
    by weight pruning (not by filter pruning).

    ``prunable_layers()`` (filter pruning, schedules, perturbation) never lists ``fc``, as for
    every model; ``weight_prunable_layers()`` (IMP, weight granularity) adds it.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], num_classes: int):
        super().__init__(in_channels, widths, (3,) * len(widths), "B", num_classes)
        self._weight_only_paths = {"fc": "fc"}  # OpenLTH prunes the output layer's weight too


def _openlth_init(module: nn.Module) -> None:
    """OpenLTH's ``initializers.kaiming_normal`` then ``bn_initializers.uniform``, per module."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)
    if isinstance(module, nn.BatchNorm2d):
        nn.init.uniform_(module.weight, 0.0, 1.0)
        nn.init.zeros_(module.bias)


def openlth_resnet20(input_shape: tuple[int, ...], num_classes: int, width: int) -> OpenLthResNet:
    """OpenLTH's ``cifar_resnet_20[_W]``: ``width`` = W, the first stage's channels (0 = 16);
    272,474 parameters for 10 classes.

    Prunable names as :class:`CifarResNet` with option B: ``conv1`` (stem), ``layerS.B.conv1``,
    ``layerS.B.conv2``, ``layer2.0.shortcut_conv``, ``layer3.0.shortcut_conv``; weight pruning adds
    ``fc`` (22 tensors). Default schedule: none; this model is for IMP, whose layer set is
    ``weight_prunable_layers()`` (a schedule run must name its layers).
    """
    check_input("openlth_resnet20", input_shape, rank=3, min_size=4)
    w = width or 16
    model = OpenLthResNet(input_shape[0], (w, 2 * w, 4 * w), num_classes)
    model.apply(_openlth_init)
    return model
