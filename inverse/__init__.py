"""Inverse problems: measurement operators and Diffusion Posterior Sampling (Chung et al., ICLR 2023)."""
