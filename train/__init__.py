"""Training for the vessel U-Net: ``python -m train`` or ``torchrun ... -m train``."""
