"""pycni.ipam"""
