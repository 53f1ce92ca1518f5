"""pmsim.models"""
