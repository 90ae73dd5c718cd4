"""Pure domain of prompt A/B experiments: assignment, metrics and rollups, statistics, decisions, simulation.

Nothing here touches the store; the service layer (core/services/experiments.py) feeds these
functions with rollup records and persists what they return.
"""
