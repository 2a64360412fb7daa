"""kerasmed: train medical-imaging models in Keras and ship them anywhere."""

__version__ = "0.1.0"
