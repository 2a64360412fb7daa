from kerasmed.layers.hu_window import HUWindow

__all__ = ["HUWindow"]
