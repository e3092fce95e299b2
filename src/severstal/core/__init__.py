"""The pure core: NumPy (and pandas) in, NumPy out; no files, no TensorFlow, no globals.

Functions take the image size and the classes as arguments; ``constants`` holds Severstal's values,
their defaults.
"""
