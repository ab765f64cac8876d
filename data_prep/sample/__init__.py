"""The embedded sample dataset: realistic users made from Twemoji images.

``catalog`` builds the pools of images tied to each class; ``process`` is the generative
process (and its exact Bayes ceiling); ``render`` composites posted-photo-like images;
``generate`` writes a dataset in the SPEC layout.
"""
