"""pmsim.chain"""
