# Stand-in for torch_npu (Ascend's compiled PyTorch backend), which cannot be installed here. Like
# the real one, importing it registers `torch.npu`; every attribute is a permissive placeholder.
import torch


class _Anything:
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()

    def __bool__(self):
        return False

    def __iter__(self):
        return iter(())

    def __int__(self):
        return 0

    def __mro_entries__(self, bases):
        return (object,)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Anything()


torch.npu = _Anything()
