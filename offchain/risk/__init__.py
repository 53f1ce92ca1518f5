"""pmsim.risk"""
