"""Training-framework integrations: callbacks for PyTorch Lightning and Hugging Face Trainers,
the hook that adds them to every Trainer (``auto.install()``), and tracker output.

Nothing here is imported by ``import torchdiag``; each framework module needs its framework
installed (``pip install 'torchdiag[lightning]'`` or ``'torchdiag[hf]'``).
"""
