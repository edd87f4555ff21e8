"""Which torch device computes: the ``device`` parameter made concrete."""

import torch


def resolve_device(device):
    """'auto' -> a GPU when one is available, else the CPU; 'cuda' must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for, but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    return torch.device(device)
