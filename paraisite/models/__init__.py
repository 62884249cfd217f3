"""Backbones, heads and the LightningModule that joins them."""
