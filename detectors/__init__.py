"""Detector backends behind one small protocol; independent of trainer and analysis."""
