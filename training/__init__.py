"""PyTorch training of the VAE: data loading, the model, the training loop and its plots."""
