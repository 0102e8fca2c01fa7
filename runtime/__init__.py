"""pycni.runtime"""
