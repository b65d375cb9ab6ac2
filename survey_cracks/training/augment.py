"""Training-time augmentation for survey patches.

Survey imagery differs from the training sources in orientation, lighting, camera
colour, focus, compression and above all ground sampling distance, so each of those
is randomised. Patches are uint8 CHW tensors in and out (torchvision.transforms.v2),
normalisation happens after, in the shared `model.patches_to_tensor` path.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


class RandomRot90(nn.Module):
    """Quarter turns: a crack has no preferred direction."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 4, (1,)))
        return torch.rot90(image, k, dims=(-2, -1)) if k else image


class ScaleJitter(nn.Module):
    """Simulate another ground sampling distance.

    Zoom in on a crop that keeps the patch centre (where the label lives), or lose
    resolution by shrinking and re-enlarging (a coarser camera or higher flight).
    """

    def __init__(self, zoom: tuple[float, float] = (0.65, 1.0), coarsen: tuple[float, float] = (0.45, 0.9), p: float = 0.6):
        super().__init__()
        self.zoom, self.coarsen, self.p = zoom, coarsen, p

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(1)) > self.p:
            return image
        size = image.shape[-1]
        if float(torch.rand(1)) < 0.5:
            side = int(size * float(torch.empty(1).uniform_(*self.zoom)))
            slack = size - side
            top = slack // 2 + int(torch.randint(-(slack // 4), slack // 4 + 1, (1,)))
            left = slack // 2 + int(torch.randint(-(slack // 4), slack // 4 + 1, (1,)))
            return F.resized_crop(image, top, left, side, side, [size, size], antialias=True)
        small = max(8, int(size * float(torch.empty(1).uniform_(*self.coarsen))))
        return F.resize(F.resize(image, [small, small], antialias=True), [size, size], antialias=True)


class GaussianNoiseU8(nn.Module):
    """Sensor noise on uint8 images."""

    def __init__(self, sigma: tuple[float, float] = (2.0, 10.0), p: float = 0.25):
        super().__init__()
        self.sigma, self.p = sigma, p

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(1)) > self.p:
            return image
        sigma = float(torch.empty(1).uniform_(*self.sigma))
        noisy = image.float() + torch.randn(image.shape) * sigma
        return noisy.clamp_(0, 255).to(torch.uint8)


def training_augmentation() -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            RandomRot90(),
            ScaleJitter(),
            v2.RandomApply([v2.ColorJitter(brightness=0.35, contrast=0.35, saturation=0.35, hue=0.04)], p=0.8),
            v2.RandomGrayscale(p=0.1),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.2, 1.5))], p=0.2),
            GaussianNoiseU8(),
            v2.RandomApply([v2.JPEG(quality=(35, 95))], p=0.3),
        ]
    )


def save_augmentation_grid(patches: torch.Tensor, path: str, columns: int = 8, seed: int = 0) -> None:
    """A picture of what the model is shown: each row one patch, then its augmentations."""
    from torchvision.utils import save_image

    torch.manual_seed(seed)
    augment = training_augmentation()
    rows = []
    for patch in patches:
        rows.append(patch)
        rows.extend(augment(patch) for _ in range(columns - 1))
    grid = torch.stack(rows).float() / 255.0
    save_image(grid, path, nrow=columns, padding=2, pad_value=1.0)
