"""The network: the U-Net (``unet``) and its self-describing checkpoints (``checkpoint``).

Both import torch, so only training, export and the PyTorch engine import them; the ONNX
Runtime path never does.
"""
