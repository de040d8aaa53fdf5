"""The common library of droneflow: models, wire protocol, settings and the two ports.

Every service imports this package; this package imports no service.
"""
