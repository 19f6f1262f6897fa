"""Fracture classification library: preprocessing, models, training, evaluation, Grad-CAM.

Imports nothing here, so web processes that import `ml` never load TensorFlow.
"""
