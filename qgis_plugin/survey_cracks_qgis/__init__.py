"""Survey cracks for QGIS: a Processing provider that runs the survey_cracks product and loads its outputs.

QGIS calls `classFactory`; qgis is imported only there, so `runner` (the plain-Python logic)
imports without QGIS and is tested in the project's own test suite.
"""


def classFactory(iface):
    from .plugin import SurveyCracksPlugin

    return SurveyCracksPlugin(iface)
