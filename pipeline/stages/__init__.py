"""One module or small package per pipeline stage.

The only place that combines trainer, analysis and detectors.
"""
