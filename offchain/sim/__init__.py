"""pmsim.sim"""
