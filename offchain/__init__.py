"""pmsim: an on-chain portfolio-margin protocol and its simulator (off-chain package)."""

__version__ = "0.1.0"
