"""The kernel package's one exception (it stands alone: it never imports the app that uses it)."""


class KernelError(ValueError):
    """A kernel cannot run as asked: an unknown or unavailable backend, a model whose logits are not a
    plain ``hidden @ lm_head.T``. The message is one line, meant for the user."""
