"""The PyTorch peer: the flagship U-Net written in plain PyTorch, for `kerasmed bench-train`.

The layer for layer twin of `kerasmed.models.unet.unet2d` (HU window, two 3x3 conv + norm + ReLU
per level, max-pooling, stride-2 transposed convolutions, concatenated skips, 1x1 logits), with
the same loss (binary cross-entropy + soft Dice pooled over the batch) and Adam with Keras'
epsilon. It is what a user would otherwise train with, so it is the peer kerasmed's training speed
is held against. PyTorch is a bench-only extra (`pip install -e ".[bench]"`), never imported by
anything else.
"""

from __future__ import annotations

import multiprocessing
import time

from serving.errors import DependencyError


def import_torch():
    """Import torch, or explain how to install the bench extra."""
    try:
        import torch
    except ImportError as err:
        raise DependencyError(
            "The PyTorch peer of `kerasmed bench-train` needs torch: pip install -e \".[bench]\" "
            "(or pass --no-peer). Received: torch is not installed"
        ) from err
    return torch


def build_torch_unet(context: int, num_classes: int = 1, filters: int = 16, depth: int = 3,
                     normalization: str = "batch", hu_window=(-1000.0, 400.0)):
    """The PyTorch twin of `unet2d` with the same arguments.

    Returns:
        A `torch.nn.Module` mapping `(N, context, H, W)` raw HU to `(N, num_classes, H, W)`
        probabilities (sigmoid for one class, softmax otherwise).
    """
    torch = import_torch()
    nn = torch.nn
    low, high = (float(v) for v in hu_window)

    def norm(channels):
        if normalization == "batch":
            # Keras BatchNormalization: momentum 0.99 (PyTorch counts 1 - that), epsilon 1e-3.
            return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)
        if normalization == "group":
            return nn.GroupNorm(min(8, channels), channels, eps=1e-3)
        return nn.Identity()

    def block(cin, cout):
        bias = normalization == "none"
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias), norm(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias), norm(cout), nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [filters * 2**level for level in range(depth + 1)]
            cin, self.down = context, nn.ModuleList()
            for level in range(depth):
                self.down.append(block(cin, widths[level]))
                cin = widths[level]
            self.bottom = block(cin, widths[depth])
            self.up, self.up_blocks = nn.ModuleList(), nn.ModuleList()
            for level in reversed(range(depth)):
                self.up.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
                self.up_blocks.append(block(2 * widths[level], widths[level]))
            self.logits = nn.Conv2d(widths[0], num_classes, 1)

        def forward(self, x):
            x = (x.clamp(low, high) - low) / (high - low)
            skips = []
            for down in self.down:
                x = down(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.bottom(x)
            for up, up_block in zip(self.up, self.up_blocks):
                x = up_block(torch.cat([up(x), skips.pop()], dim=1))
            logits = self.logits(x)
            return torch.sigmoid(logits) if num_classes == 1 else torch.softmax(logits, dim=1)

    return UNet()


class TorchTrainer:
    """One Adam training step of the PyTorch twin on fixed in-memory tensors.

    Args:
        images: `(B, H, W, K)` float32 raw HU (the layout kerasmed's pipeline yields).
        masks: `(B, H, W, 1)` float32 in {0, 1}.
        channels_last: keep activations in NHWC memory format (oneDNN's preferred CPU layout).
        learning_rate, dice_weight, model_kwargs: as in the kerasmed config.
    """

    def __init__(self, images, masks, channels_last: bool, learning_rate: float = 1e-3,
                 dice_weight: float = 1.0, threads: int | None = None, **model_kwargs):
        torch = import_torch()
        self.torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        torch.manual_seed(0)
        self.model = build_torch_unet(context=images.shape[-1], **model_kwargs).train()
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        y = torch.from_numpy(masks).permute(0, 3, 1, 2).contiguous()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
            y = y.contiguous(memory_format=torch.channels_last)
        self.x, self.y, self.dice_weight = x, y, float(dice_weight)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate, eps=1e-7)

    def step(self) -> float:
        torch = self.torch
        self.optimizer.zero_grad(set_to_none=True)
        probs = self.model(self.x)
        ce = torch.nn.functional.binary_cross_entropy(probs, self.y)
        intersection = (probs * self.y).sum()
        dice = (2.0 * intersection + 1.0) / (probs.sum() + self.y.sum() + 1.0)
        loss = ce + self.dice_weight * (1.0 - dice)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def _serve(conn, images, masks, channels_last, kwargs) -> None:
    """Child-process loop: build the trainer, then answer `(warmup, steps)` with seconds."""
    try:
        trainer = TorchTrainer(images, masks, channels_last, **kwargs)
        torch = trainer.torch
        conn.send(("ready", {"trainable_params": trainer.trainable_parameters(),
                             "threads": torch.get_num_threads(), "version": torch.__version__}))
        while True:
            request = conn.recv()
            if request is None:
                break
            warmup, steps = request
            for _ in range(warmup):
                trainer.step()
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step()
            conn.send(("ok", time.perf_counter() - start))
    except Exception as err:  # reported to the parent, which raises it with context
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


class TorchPeerProcess:
    """A `TorchTrainer` in its own process, timed on request.

    PyTorch and TensorFlow each keep a pool of worker threads per core; in one process the idle
    pool of one framework competes with the busy one for the same two cores. A child process per
    peer keeps the comparison fair to both, while the parent still interleaves the timed windows.

    Args:
        images, masks, channels_last, **kwargs: as `TorchTrainer`.
    """

    def __init__(self, images, masks, channels_last: bool, **kwargs):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, images, masks, channels_last, kwargs),
                                    daemon=True)
        self._process.start()
        child.close()
        #: `{"trainable_params", "threads", "version"}` reported by the child.
        self.info = self._receive()

    def _receive(self):
        if not self._conn.poll(600):
            raise RuntimeError("The PyTorch peer process did not answer within 600 s")
        status, value = self._conn.recv()
        if status == "error":
            raise RuntimeError(f"The PyTorch peer process failed: {value}")
        return value

    def time_steps(self, warmup: int, steps: int) -> float:
        """Seconds for `steps` training steps after `warmup` untimed ones."""
        self._conn.send((warmup, steps))
        return self._receive()

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(None)
            self._process.join(timeout=30)
        self._conn.close()
