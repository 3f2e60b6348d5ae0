"""Weight files shipped with the package (the MNIST digit classifier used by ``minidiffusion evaluate``)."""
