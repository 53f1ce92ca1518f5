"""Model validation: out-of-sample backtests of VaR, ES and IM, calibration and procyclicality studies.

Everything here runs the risk engine itself (:class:`offchain.risk.engine.MarginEngine`) on the
vendored daily history, valuing each test day with only the returns known the evening before
(:meth:`offchain.risk.history.HistoricalReturns.as_of`). See ``docs/validation.md``.
"""
