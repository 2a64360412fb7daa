"""The PyTorch peer must be the same network as kerasmed's U-Net, or the speed comparison is void."""

import numpy as np
import pytest
import torch

from kerasmed.bench.torch_peer import TorchTrainer, build_torch_unet
from kerasmed.models.unet import unet2d
from tests.helpers import assert_allclose


def _copy_keras_weights(keras_model, torch_model):
    """Load the Keras weights into the twin, layer by layer in build order."""
    convs = [m for m in torch_model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    t_named = dict(torch_model.named_modules())
    mapping = []
    depth = len(torch_model.down)
    for level in range(depth):
        mapping += [(f"down{level}_conv1", f"down.{level}.0"), (f"down{level}_conv2", f"down.{level}.3")]
    mapping += [("bottom_conv1", "bottom.0"), ("bottom_conv2", "bottom.3")]
    for i, level in enumerate(reversed(range(depth))):
        mapping += [(f"up{level}_transpose", f"up.{i}"), (f"up{level}_conv1", f"up_blocks.{i}.0"),
                    (f"up{level}_conv2", f"up_blocks.{i}.3")]
    mapping += [("logits", "logits")]
    assert len(mapping) == len(convs)
    with torch.no_grad():
        for k_name, t_name in mapping:
            layer, module = keras_model.get_layer(k_name), t_named[t_name]
            kernel = np.asarray(layer.kernel)
            if isinstance(module, torch.nn.ConvTranspose2d):
                w = kernel.transpose(3, 2, 0, 1)  # (kh, kw, out, in) -> (in, out, kh, kw)
            else:
                w = kernel.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            if module.bias is not None:
                module.bias.copy_(torch.from_numpy(np.asarray(layer.bias)))
        for k_name in [n for n, _ in mapping if "conv" in n]:
            norm_layer = keras_model.get_layer(k_name.replace("conv", "norm"))
            t_name = dict(mapping)[k_name]
            module = t_named[t_name[:-1] + str(int(t_name[-1]) + 1)]
            gamma, beta, mean, var = (np.asarray(w) for w in norm_layer.weights)
            module.weight.copy_(torch.from_numpy(gamma))
            module.bias.copy_(torch.from_numpy(beta))
            module.running_mean.copy_(torch.from_numpy(mean))
            module.running_var.copy_(torch.from_numpy(var))


@pytest.mark.parametrize("num_classes", [1, 3])
def test_twin_has_the_same_parameters_and_outputs_as_keras(num_classes):
    kwargs = {"num_classes": num_classes, "filters": 4, "depth": 2, "hu_window": (-1000.0, 400.0)}
    keras_model = unet2d(input_shape=(None, None, 3), **kwargs)
    twin = build_torch_unet(context=3, **kwargs).eval()
    keras_params = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    assert sum(p.numel() for p in twin.parameters()) == keras_params
    _copy_keras_weights(keras_model, twin)
    x = np.random.default_rng(0).uniform(-1100, 500, (2, 16, 24, 3)).astype(np.float32)
    expected = keras_model.predict(x, verbose=0)
    with torch.no_grad():
        got = twin(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_trainer_steps_reduce_the_loss(channels_last):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1000, 400, (4, 32, 32, 3)).astype(np.float32)
    masks = (images[..., 1:2] > 0).astype(np.float32)
    trainer = TorchTrainer(images, masks, channels_last, learning_rate=1e-2, filters=4, depth=2)
    losses = [trainer.step() for _ in range(15)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0]
