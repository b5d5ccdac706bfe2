"""Import paths of the original santi-pdp/pase package, for code written against it.

``from pase.models.frontend import wf_builder`` works unchanged; see :mod:`pase.models.frontend`.
"""
