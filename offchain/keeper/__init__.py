"""pmsim.keeper"""
