"""pmsim.engine"""
