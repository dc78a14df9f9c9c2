"""PyTorch frontend: capture (torch.export -> IR) and the model zoo."""
