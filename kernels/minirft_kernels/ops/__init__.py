"""One module per fused op: Triton kernel(s), launcher, ``torch.autograd.Function``, torch reference."""
